"""The post-training quantization (PTQ) protocol, the same recipe for every policy.

1. fold BatchNorm into the convolutions (``quant.fold``);
2. quantize weights per output channel (symmetric), range from the weight observer;
3. round the weights: ``nearest``, or ``adaround`` (learned rounding, Nagel et al., ICML 2020),
   layer by layer in forward order, each layer reconstructing the full-precision model's output
   of that layer from the inputs the already-rounded layers produce;
4. calibrate the input-activation ranges on the calibration images;
5. (the caller) evaluate on test.

The calibration images come from the train split minus the validation hold-out, drawn with the
run's seed; their labels are not used.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.cost import Bits
from mpqbench.data import Split, calibration_subset
from mpqbench.errors import MpqbenchError
from mpqbench.quant.fold import fold_batchnorm
from mpqbench.quant.modules import (
    QuantMixin,
    StaticQuantizer,
    quant_layers,
    quantize_model,
    set_input_quantizer_mode,
)
from mpqbench.registry import Registry
from mpqbench.runtime import progress

# AdaRound's rectified sigmoid stretch (Nagel et al. 2020, eq. 23)
ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class PtqConfig:
    """PTQ settings (``profiles.<name>.ptq`` in params.yaml).

    calib_images: images drawn from train for calibration and reconstruction;
    batch_size: images per forward pass while calibrating;
    weight_observer / act_observer: minmax, percentile or mse (see ``quant.observers``);
    adaround_iters: optimizer steps per layer; adaround_batch_size: images per step;
    adaround_lr: Adam's learning rate on the rounding variables;
    adaround_reg: weight of the rounding regularizer (lambda, eq. 24);
    adaround_warmup: fraction of steps without the regularizer;
    adaround_beta: the regularizer's temperature, annealed from the first to the second value.
    """

    calib_images: int = 1024
    batch_size: int = 128
    weight_observer: str = "mse"
    act_observer: str = "mse"
    adaround_iters: int = 1000
    adaround_batch_size: int = 32
    adaround_lr: float = 0.01
    adaround_reg: float = 0.01
    adaround_warmup: float = 0.2
    adaround_beta: tuple[float, float] = (20.0, 2.0)

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | None) -> PtqConfig:
        spec = dict(spec or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise MpqbenchError(f"unknown ptq settings {unknown}; known: {sorted(known)}")
        if "adaround_beta" in spec:
            spec["adaround_beta"] = tuple(float(b) for b in spec["adaround_beta"])
        config = cls(**spec)
        if config.calib_images < 1 or config.batch_size < 1 or config.adaround_iters < 0:
            raise MpqbenchError("ptq calib_images and batch_size must be >= 1, "
                                "adaround_iters >= 0")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PtqResult:
    """The quantized model, the wall seconds of each step and per-layer rounding statistics."""

    model: nn.Module
    seconds: dict[str, float]
    layer_stats: LayerStats


LayerStats = dict[str, dict[str, float]]
Rounding = Callable[[nn.Module, nn.Module, list[torch.Tensor], PtqConfig, int], LayerStats]
ROUNDINGS: Registry[Rounding] = Registry("rounding")


@ROUNDINGS.register("nearest")
def round_nearest(qmodel: nn.Module, fp_model: nn.Module, batches: list[torch.Tensor],
                  config: PtqConfig, seed: int) -> LayerStats:
    """Nothing to learn: the static weight quantizers round to nearest in every forward."""
    return {}


def _layer_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, module.bias)
    return F.linear(x, weight, module.bias)


def _soft_bits(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def adaround_layer(module: QuantMixin, inputs: torch.Tensor, targets: torch.Tensor,
                   config: PtqConfig, generator: torch.Generator) -> dict[str, float]:
    """Learn the up/down rounding of ``module``'s weight (in place), Nagel et al. 2020.

    Minimizes ``||W~ x - W x||^2`` (summed over output channels, averaged over positions and
    images) plus ``lambda * sum(1 - |2 h(V) - 1|^beta)``, with
    ``W~ = s * clamp(floor(W / s) + h(V), qmin, qmax)`` and ``h`` the rectified sigmoid.
    ``inputs`` / ``targets``: the layer's input and the FP model's output of that layer.
    """
    quantizer = module.weight_quantizer
    if not isinstance(quantizer, StaticQuantizer):
        raise MpqbenchError("AdaRound needs a static weight quantizer")
    weight = module.weight.detach()
    scheme = quantizer.scheme
    scale = quantizer.scale.reshape(-1, *([1] * (weight.dim() - 1)))
    floor = torch.floor(weight / scale)
    rest = (weight / scale - floor).clamp(0.01, 0.99)
    v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(v) = rest at start
    optimizer = torch.optim.Adam([v], lr=config.adaround_lr)
    n = inputs.shape[0]
    iters, warmup = config.adaround_iters, int(config.adaround_warmup * config.adaround_iters)
    beta_start, beta_end = config.adaround_beta
    reconstruction = torch.zeros(())
    for it in range(iters):
        idx = torch.randint(n, (min(config.adaround_batch_size, n),), generator=generator)
        x, target = inputs[idx.to(inputs.device)], targets[idx.to(inputs.device)]
        h = _soft_bits(v)
        out = _layer_forward(module, x, torch.clamp(floor + h, scheme.qmin, scheme.qmax) * scale)
        reconstruction = (out - target).pow(2).sum(1).mean()
        loss = reconstruction
        reconstruction = reconstruction.detach()
        if it >= warmup:
            progress_after_warmup = (it - warmup) / max(iters - warmup, 1)
            beta = beta_end + (beta_start - beta_end) * (1 - progress_after_warmup)
            loss = loss + config.adaround_reg * (1 - (2 * h - 1).abs().pow(beta)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        hard = (v >= 0).to(weight.dtype)
        rounded = torch.clamp(floor + hard, scheme.qmin, scheme.qmax) * scale
        nearest = quantizer(weight)
        # the rounded weight lies on the grid, so the nearest-rounding quantizer keeps it as is
        module.weight.copy_(rounded)
        changed = (rounded != nearest).float().mean().item()
    return {"reconstruction": reconstruction.item(), "flipped_vs_nearest": changed}


class _FpTargets:
    """The FP model's output of each layer, produced in forward order by a second thread.

    The FP forward pass runs once over all calibration images; a bounded queue makes it wait
    until the quantized model has consumed each layer's output, so at most two layers' outputs
    are held at a time.
    """

    def __init__(self, fp_model: nn.Module, names: list[str], images: torch.Tensor) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._handles = [fp_model.get_submodule(name).register_forward_hook(self._hook(name))
                         for name in names]
        self._thread = threading.Thread(target=self._run, args=(fp_model, images), daemon=True)
        self._thread.start()

    def _hook(self, name: str):
        def put(module: nn.Module, inputs, output: torch.Tensor) -> None:
            while not self._stop.is_set():
                try:
                    self._queue.put((name, output.detach()), timeout=0.5)
                    return
                except queue.Full:
                    continue
            raise _Cancelled
        return put

    def _run(self, fp_model: nn.Module, images: torch.Tensor) -> None:
        try:
            with torch.no_grad():
                fp_model(images)
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put(("", exc))

    def next(self, name: str) -> torch.Tensor:
        got, value = self._queue.get()
        if isinstance(value, BaseException):
            raise MpqbenchError(f"the FP model failed while producing AdaRound targets: "
                                f"{value}") from value
        if got != name:
            raise MpqbenchError(f"AdaRound expected the FP output of {name}, got {got}; the "
                                f"two models do not run their layers in the same order")
        return value

    def close(self) -> None:
        self._stop.set()
        for handle in self._handles:
            handle.remove()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass


class _Cancelled(Exception):
    """Ends the FP thread's forward pass when the quantized side stops early."""


@ROUNDINGS.register("adaround")
def round_adaround(qmodel: nn.Module, fp_model: nn.Module, batches: list[torch.Tensor],
                   config: PtqConfig, seed: int) -> LayerStats:
    """AdaRound every quantized layer, in forward order, inputs from the rounded model.

    One forward pass of the quantized model over all calibration images: a pre-hook on each
    layer learns that layer's rounding from the input it receives (so from the layers before
    it, already rounded) and the FP model's output of the same layer (``_FpTargets``), then the
    pass goes on with the rounded weights. Cost: one forward of each model plus the rounding
    steps, linear in depth.

    Returns, per layer, the last step's reconstruction error and the fraction of weights
    rounded differently from nearest.
    """
    generator = torch.Generator().manual_seed(seed)
    stats: LayerStats = {}
    layers = [(name, m) for name, m in quant_layers(qmodel) if m.weight_quantizer is not None]
    images = torch.cat(batches)
    bar = progress(range(len(layers)), "AdaRound", total=len(layers))
    ticks = iter(bar)
    targets = _FpTargets(fp_model, [name for name, _ in layers], images)

    def learn(name: str, module: QuantMixin):
        def hook(mod: nn.Module, inputs) -> None:
            with torch.enable_grad():
                stats[name] = adaround_layer(module, inputs[0].detach(), targets.next(name),
                                             config, generator)
            next(ticks, None)
        return hook

    handles = [module.register_forward_pre_hook(learn(name, module)) for name, module in layers]
    try:
        with torch.no_grad():
            qmodel(images)
    finally:
        for handle in handles:
            handle.remove()
        targets.close()
        for _ in ticks:  # closes the bar
            pass
    missing = [name for name, _ in layers if name not in stats]
    if missing:
        raise MpqbenchError(f"AdaRound never reached layers {missing} in the forward pass")
    return stats


def calibration_batches(split: Split | list[torch.Tensor], config: PtqConfig, seed: int,
                        device: torch.device | str) -> list[torch.Tensor]:
    """The calibration images (no augmentation) as normalized batches on ``device``.

    ``split``: a split to draw ``config.calib_images`` from, or batches of images already in
    the model's input space (synthetic data), used as they are.
    """
    if isinstance(split, list):
        if not split or not all(isinstance(x, torch.Tensor) for x in split):
            raise MpqbenchError("calibration batches must be a non-empty list of image tensors")
        return [x.to(device) for x in split]
    subset = calibration_subset(split, min(config.calib_images, len(split)), seed)
    return [x.to(device) for x, _ in subset.batches(config.batch_size)]


@torch.no_grad()
def calibrate_inputs(qmodel: nn.Module, batches: list[torch.Tensor]) -> None:
    """Observe every input quantizer on ``batches``, then switch them on."""
    set_input_quantizer_mode(qmodel, "observe")
    for x in batches:
        qmodel(x)
    set_input_quantizer_mode(qmodel, "on")


def run_ptq(
    model: nn.Module,
    bits: Bits,
    calibration: Split | list[torch.Tensor],
    input_shape: tuple[int, int, int],
    rounding: str = "nearest",
    config: PtqConfig | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> PtqResult:
    """Quantize ``model`` (left untouched) to ``bits`` with the PTQ protocol.

    ``calibration``: the split to draw ``config.calib_images`` images from (train), or
    batches of images in the model's input space (data-free PTQ);
    ``bits``: ``{layer: (w_bits, a_bits)}`` for every Conv2d / Linear (32 = full precision).
    """
    config = config or PtqConfig()
    round_fn = ROUNDINGS.get(rounding)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    model = model.to(device).eval()
    fp_folded = fold_batchnorm(model)
    qmodel = quantize_model(fp_folded, bits, input_shape, weight_observer=config.weight_observer,
                            input_observer=config.act_observer)
    seconds["fold_quantize_s"] = time.perf_counter() - start

    tic = time.perf_counter()
    batches = calibration_batches(calibration, config, seed, device)
    with torch.enable_grad():
        layer_stats = round_fn(qmodel, fp_folded, batches, config, seed)
    seconds["rounding_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    calibrate_inputs(qmodel, batches)
    seconds["calibrate_s"] = time.perf_counter() - tic
    seconds["total_s"] = time.perf_counter() - start
    if not all(math.isfinite(p.float().sum().item()) for p in qmodel.parameters()):
        raise MpqbenchError("PTQ produced non-finite weights; check the calibration data")
    return PtqResult(qmodel.eval(), seconds, layer_stats)
