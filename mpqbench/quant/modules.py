"""Quantized layers and putting a Policy onto a model.

``QuantConv2d`` / ``QuantLinear`` subclass ``nn.Conv2d`` / ``nn.Linear``, so module paths,
state-dict keys and the cost model see the same layers as in the FP model. Each holds a weight
quantizer and an input-activation quantizer (either may be ``None``: full precision).

Quantizers, by registry name:
- ``static``: scale and zero point from an observer (PTQ). Weights: symmetric, signed, per
  output channel, calibrated from the weight at once. Inputs: affine, unsigned, per tensor,
  calibrated by running data through the model in ``observe`` mode.
- ``lsq``: learned step size (Esser et al. 2020), weights per channel, inputs per tensor.
- ``multi_lsq``: one learned step per candidate bit width, one of them active (LIMPQ).

A bit width of 32 or more means "not quantized".
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.cost import Bits, quantizable_layers
from mpqbench.errors import MpqbenchError
from mpqbench.quant.observers import Observer, make_observer
from mpqbench.quant.policy import Policy
from mpqbench.quant.quantizers import (
    QuantScheme,
    fake_quantize_inference,
    lsq_gradient_scale,
    lsq_init_step,
    lsq_quantize_fused,
)
from mpqbench.registry import Registry

FP_BITS = 32
# a learned step at or below this is dead: every weight it quantizes rounds to ~0 (units of the
# tensor it quantizes)
MIN_LIVE_STEP = 1e-6
QuantizerFactory = Callable[..., nn.Module]
QUANTIZERS: Registry[QuantizerFactory] = Registry("quantizer")


def weight_scheme(bits: int) -> QuantScheme:
    return QuantScheme(bits, signed=True, symmetric=True, per_channel=True, axis=0)


def input_scheme(bits: int) -> QuantScheme:
    return QuantScheme(bits, signed=False, symmetric=False, per_channel=False)


class StaticQuantizer(nn.Module):
    """Fixed scale and zero point (buffers), set by an observer.

    Modes: ``off`` (identity), ``observe`` (identity, feeding the observer), ``on``.
    """

    def __init__(self, scheme: QuantScheme, observer: str = "minmax") -> None:
        super().__init__()
        self.scheme = scheme
        self.bits = scheme.bits
        self.observer_name = observer
        self.mode = "off"
        self.calibrated = False
        self.observer: Observer | None = None
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))

    def start_observing(self) -> None:
        self.observer = make_observer(self.observer_name, self.scheme)
        self.mode = "observe"

    def finish_observing(self) -> None:
        scale, zero = self.observer.qparams()
        self.set_qparams(scale, zero)
        self.observer = None

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.scale = scale.to(self.scale.device)
        self.zero_point = zero_point.to(self.zero_point.device)
        self.calibrated = True
        self.mode = "on"

    def calibrate_now(self, x: torch.Tensor) -> None:
        self.start_observing()
        self.observer.observe(x)
        self.finish_observing()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "on":
            # per tensor on the CPU without autograd (evaluation): in-place passes, the
            # values of torch's kernel (tests/test_fast_quant.py); else torch's fused
            # kernels: the same values and input gradient as quantizers.fake_quantize
            # (tests/test_quantizers.py). The scale is not learned.
            if not self.scheme.per_channel and x.device.type == "cpu" and not (
                    torch.is_grad_enabled() and x.requires_grad):
                return fake_quantize_inference(x, self.scale, float(self.zero_point),
                                               self.scheme.qmin, self.scheme.qmax)
            zero = self.zero_point.to(torch.int32)
            if self.scheme.per_channel:
                return torch.fake_quantize_per_channel_affine(
                    x, self.scale, zero, self.scheme.axis, self.scheme.qmin, self.scheme.qmax)
            return torch.fake_quantize_per_tensor_affine(
                x, self.scale, zero, self.scheme.qmin, self.scheme.qmax)
        if self.mode == "observe":
            self.observer.observe(x)
        return x

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, observer={self.observer_name}"


class LsqQuantizer(nn.Module):
    """A learned step (Esser et al. 2020), initialized from the first tensor it sees.

    ``positive``: how the step is kept positive. ``abs`` (default): the forward pass uses
    ``|step|``, identical to LSQ while the step is positive, and a step that an SGD update
    pushes through zero stays positive with a live gradient. ``clamp``: the raw step clamped
    to ``step_range`` (LIMPQ's indicator training, ``[1e-5, 1]``, as the authors' code); a
    step an update pushes below the bound gets no gradient there and never comes back (the
    collapse of issue 14), which ``dead_steps`` reports. With ``abs`` a ``step_range``
    clamps ``|step|``. ``init``: ``lsq`` (``2 mean|x| / sqrt(Q_P)``) or ``sigma`` (LIMPQ's
    weight init, ``max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)``).
    """

    def __init__(self, scheme: QuantScheme, channels: int | None = None,
                 step_range: tuple[float, float] | None = None, init: str = "lsq",
                 positive: str = "abs") -> None:
        super().__init__()
        if init not in LSQ_INITS:
            raise MpqbenchError(f"unknown LSQ init {init!r}; known: {', '.join(LSQ_INITS)}")
        if positive not in ("abs", "clamp") or (positive == "clamp" and step_range is None):
            raise MpqbenchError(f"LSQ positive must be 'abs', or 'clamp' with a step_range; "
                                f"got {positive!r} with step_range {step_range}")
        self.positive = positive
        self.scheme = scheme
        self.bits = scheme.bits
        self.step_range = tuple(step_range) if step_range is not None else None
        self.init = init
        shape = (channels,) if scheme.per_channel else ()
        self.step = nn.Parameter(torch.ones(shape))
        self.register_buffer("initialized", torch.tensor(False))

    def init_from(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.step.copy_(LSQ_INITS[self.init](x, self.scheme))
        self.initialized.fill_(True)

    def effective_step(self) -> torch.Tensor:
        """The step the forward pass uses (``|step|``, then the clamp), shape () or (C,)."""
        step = self.step.abs() if self.positive == "abs" else self.step
        if self.step_range is None:
            return step
        return torch.clamp(step, *self.step_range)

    def at_bound(self) -> bool:
        """True when the step is dead: not finite, ``|step| <= MIN_LIVE_STEP``, or outside
        ``step_range`` (where the clamp passes no gradient)."""
        step = self.step.detach()
        if not bool(torch.isfinite(step).all()):
            return True
        magnitude = step.abs() if self.positive == "abs" else step
        if bool((magnitude <= MIN_LIVE_STEP).any()):
            return True
        if self.step_range is not None:
            lo, hi = self.step_range
            return bool(((magnitude < lo) | (magnitude > hi)).any())
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.initialized:
            self.init_from(x)
        per_step = x.numel() // self.step.numel()
        axis = self.scheme.axis if self.scheme.per_channel else None
        return lsq_quantize_fused(x, self.effective_step(), self.scheme.qmin, self.scheme.qmax,
                                  axis, lsq_gradient_scale(per_step, self.scheme.qmax))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.scheme.per_channel}, init={self.init}"


def _sigma_init(x: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """LIMPQ's weight step init (Tang et al. 2022, authors' code): the 3-sigma range / 2^(b-1)."""
    x = x.detach()
    if scheme.per_channel:
        flat = x.transpose(0, scheme.axis).reshape(x.shape[scheme.axis], -1)
        mu, sigma = flat.mean(1), flat.std(1)
    else:
        mu, sigma = x.mean(), x.std()
    bound = torch.maximum((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs())
    return (bound / 2 ** (scheme.bits - 1)).clamp(min=1e-8)


LSQ_INITS: dict[str, Callable[[torch.Tensor, QuantScheme], torch.Tensor]] = {
    "lsq": lambda x, scheme: lsq_init_step(x, scheme.qmax, scheme.per_channel, scheme.axis),
    "sigma": _sigma_init,
}


class MultiBitLsqQuantizer(nn.Module):
    """One LsqQuantizer per candidate bit width; ``bits`` selects the active one.

    LIMPQ (Tang et al., ECCV 2022) trains all of them at once, drawing the active width at
    random each step; the learned steps are the layer's importance indicators.
    """

    def __init__(self, candidates: Iterable[int], make_scheme: Callable[[int], QuantScheme],
                 channels: int | None = None, **lsq_options: object) -> None:
        super().__init__()
        self.candidates = sorted(set(candidates))
        if not self.candidates:
            raise MpqbenchError("a multi-bit quantizer needs at least one candidate bit width")
        self.per_bits = nn.ModuleDict(
            {str(b): LsqQuantizer(make_scheme(b), channels, **lsq_options)
             for b in self.candidates})
        self.bits = self.candidates[-1]

    def set_bits(self, bits: int) -> None:
        if bits not in self.candidates:
            raise MpqbenchError(f"bit width {bits} is not a candidate ({self.candidates})")
        self.bits = bits

    def step(self, bits: int) -> torch.Tensor:
        """The effective (clamped) step of the ``bits`` quantizer."""
        return self.per_bits[str(bits)].effective_step()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_bits[str(self.bits)](x)

    def extra_repr(self) -> str:
        return f"candidates={self.candidates}, active={self.bits}"


@QUANTIZERS.register("static")
def _static(role: str, bits: int, module: nn.Module, weight_observer: str = "minmax",
            input_observer: str = "minmax", **_: object) -> nn.Module:
    # made on the layer's device: set_qparams keeps the buffers' device, so a quantizer made
    # on the CPU for a layer on a GPU would hold CPU scales after calibration there
    device = module.weight.device
    if role == "weight":
        quantizer = StaticQuantizer(weight_scheme(bits), weight_observer).to(device)
        quantizer.calibrate_now(module.weight)
        return quantizer
    return StaticQuantizer(input_scheme(bits), input_observer).to(device)


def _lsq_weight_scheme(bits: int, per_channel: bool) -> QuantScheme:
    return QuantScheme(bits, signed=True, symmetric=True, per_channel=per_channel, axis=0)


@QUANTIZERS.register("lsq")
def _lsq(role: str, bits: int, module: nn.Module, lsq_per_channel: bool = True,
         step_range: tuple[float, float] | None = None, weight_init: str = "lsq",
         positive: str = "abs", **_: object) -> nn.Module:
    """LSQ; ``lsq_per_channel=False`` gives one weight step per layer (LIMPQ, the QAT
    protocols); inputs always have one step, set from the first batch."""
    device = module.weight.device  # made on the layer's device, as _static
    if role == "weight":
        quantizer = LsqQuantizer(_lsq_weight_scheme(bits, lsq_per_channel),
                                 module.weight.shape[0] if lsq_per_channel else None,
                                 step_range, weight_init, positive).to(device)
        quantizer.init_from(module.weight)
        return quantizer
    return LsqQuantizer(input_scheme(bits), step_range=step_range, positive=positive).to(device)


@QUANTIZERS.register("multi_lsq")
def _multi_lsq(role: str, bits: int, module: nn.Module, candidates: Iterable[int] = (),
               lsq_per_channel: bool = True, step_range: tuple[float, float] | None = None,
               weight_init: str = "lsq", positive: str = "abs", **_: object) -> nn.Module:
    candidates = sorted(set(candidates) | {bits})
    if role == "weight":
        quantizer = MultiBitLsqQuantizer(
            candidates, lambda b: _lsq_weight_scheme(b, lsq_per_channel),
            module.weight.shape[0] if lsq_per_channel else None,
            step_range=step_range, init=weight_init, positive=positive).to(module.weight.device)
        for b in candidates:
            quantizer.per_bits[str(b)].init_from(module.weight)
    else:
        quantizer = MultiBitLsqQuantizer(candidates, input_scheme, step_range=step_range,
                                         positive=positive).to(module.weight.device)
    quantizer.set_bits(bits)
    return quantizer


class QuantMixin:
    """The shared state of QuantConv2d and QuantLinear."""

    weight_quantizer: nn.Module | None
    input_quantizer: nn.Module | None
    # added to the quantized weight when set: SAQ's perturbation of Q(w) (train.SaqStep)
    weight_delta: torch.Tensor | None = None

    _cache_key: tuple | None = None
    _cache_value: torch.Tensor | None = None

    def quantized_weight(self) -> torch.Tensor:
        """The weight through its quantizer (plus ``weight_delta`` when set).

        Without autograd (evaluation) the result is cached and reused until the weight or the
        quantizer's state changes (``_weight_state``): the same tensor the quantizer would
        compute again, so results are bit-identical (tests/test_quant_modules.py).
        """
        if self.weight_quantizer is None:
            w = self.weight
        elif torch.is_grad_enabled() or self.weight_delta is not None:
            w = self.weight_quantizer(self.weight)
        else:
            key = self._weight_state()
            if key is None or key != self._cache_key or self._cache_value is None:
                self._cache_value = self.weight_quantizer(self.weight)
                self._cache_key = key
            w = self._cache_value
        return w if self.weight_delta is None else w + self.weight_delta

    def _weight_state(self) -> tuple | None:
        """What the quantized weight depends on: the weight's storage and in-place version,
        every tensor of the quantizer likewise, its bits and mode. None (never cached) while
        a static quantizer is off or observing (observing has a side effect) or an LSQ step
        is not yet initialized."""
        quantizer = self.weight_quantizer
        if getattr(quantizer, "mode", "on") != "on":
            return None
        initialized = getattr(quantizer, "initialized", None)
        if initialized is not None and not bool(initialized):
            return None
        tensors = [self.weight, *quantizer.parameters(), *quantizer.buffers()]
        return (getattr(quantizer, "bits", None),
                *((t.data_ptr(), t._version, t.device) for t in tensors))

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    @property
    def w_bits(self) -> int:
        return FP_BITS if self.weight_quantizer is None else self.weight_quantizer.bits

    @property
    def a_bits(self) -> int:
        return FP_BITS if self.input_quantizer is None else self.input_quantizer.bits


class QuantConv2d(QuantMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


def _to_quant(module: nn.Module) -> nn.Module:
    """A QuantConv2d / QuantLinear sharing ``module``'s parameters, quantizers unset."""
    quant = copy.copy(module)  # shares parameters and buffers, keeps every constructor setting
    quant.__class__ = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
    quant._parameters = dict(module._parameters)
    quant._buffers = dict(module._buffers)
    quant._modules = dict(module._modules)
    quant.weight_quantizer = None
    quant.input_quantizer = None
    quant.weight_delta = None
    return quant


def image_input_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the quantizable layers that receive the model's input tensor itself."""
    seen: list[str] = []
    x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    hooks = [module.register_forward_pre_hook(
        lambda mod, inputs, name=name: seen.append(name) if inputs[0] is x else None)
        for name, module in quantizable_layers(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def factory_options(factory: QuantizerFactory) -> list[str]:
    """The keyword options a quantizer factory takes (its signature after role, bits,
    module)."""
    params = list(inspect.signature(factory).parameters.values())[3:]
    return [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def quantize_model(
    model: nn.Module,
    bits: Bits | Policy,
    input_shape: tuple[int, ...],
    weight_quantizer: str = "static",
    input_quantizer: str = "static",
    quantize_image_input: bool = False,
    **quantizer_options: object,
) -> nn.Module:
    """A copy of ``model`` with every layer named in ``bits`` replaced by its Quant* twin.

    ``bits``: ``{layer: (w_bits, a_bits)}`` or a Policy, covering every Conv2d / Linear.
    The layers fed by the image itself keep a full-precision input unless
    ``quantize_image_input`` (the image is 8-bit by nature; the cost model counts it as 8).
    ``quantizer_options`` go to the quantizer factories (static: ``weight_observer``,
    ``input_observer``; lsq / multi_lsq: ``lsq_per_channel``, ``step_range``, ``weight_init``;
    multi_lsq: ``candidates``); an option neither factory takes is an error, before any copy.
    Static input quantizers start in ``off`` mode: calibrate them (see ``ptq.calibrate``).
    """
    bits = bits.bits() if isinstance(bits, Policy) else dict(bits)
    names = [name for name, _ in quantizable_layers(model)]
    unknown = sorted(set(bits) - set(names))
    if unknown:
        raise MpqbenchError(f"layers {unknown} are not quantizable layers of the model "
                            f"(known: {', '.join(names)})")
    missing = [name for name in names if name not in bits]
    if missing:
        raise MpqbenchError(f"no bits for layers {missing}; a policy covers every layer")
    weight_factory = QUANTIZERS.get(weight_quantizer)
    input_factory = QUANTIZERS.get(input_quantizer)
    allowed = set(factory_options(weight_factory)) | set(factory_options(input_factory))
    unknown_options = sorted(set(quantizer_options) - allowed)
    if unknown_options:
        raise MpqbenchError(f"unknown quantizer options {unknown_options} for {weight_quantizer}"
                            f" weights and {input_quantizer} inputs; allowed: {sorted(allowed)}")
    quantized = copy.deepcopy(model)
    image_layers = set() if quantize_image_input else set(image_input_layers(quantized,
                                                                              input_shape))
    for name in names:
        module = quantized.get_submodule(name)
        w_bits, a_bits = bits[name]
        quant = _to_quant(module)
        if w_bits < FP_BITS:
            quant.weight_quantizer = weight_factory("weight", w_bits, quant, **quantizer_options)
        if a_bits < FP_BITS and name not in image_layers:
            quant.input_quantizer = input_factory("input", a_bits, quant, **quantizer_options)
        _set_submodule(quantized, name, quant)
    return quantized


def quant_layers(model: nn.Module) -> list[tuple[str, QuantMixin]]:
    """(name, module) of every QuantConv2d / QuantLinear."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin)]


def model_bits(model: nn.Module) -> Bits:
    """The (w_bits, a_bits) every quantized layer runs at (32: full precision)."""
    return {name: (m.w_bits, m.a_bits) for name, m in quant_layers(model)}


def set_input_quantizer_mode(model: nn.Module, mode: str) -> None:
    """Put every static input quantizer in ``off``, ``observe`` or ``on`` mode."""
    for name, module in quant_layers(model):
        quantizer = module.input_quantizer
        if isinstance(quantizer, StaticQuantizer):
            if mode == "observe":
                quantizer.start_observing()
            elif mode == "on" and quantizer.mode == "observe":
                quantizer.finish_observing()
            elif mode == "on" and not quantizer.calibrated:
                raise MpqbenchError(f"input quantizer of {name} was never calibrated; "
                                    "observe calibration batches first")
            else:
                quantizer.mode = mode


def lsq_quantizers(model: nn.Module) -> list[tuple[str, LsqQuantizer]]:
    """(name, quantizer) of every LsqQuantizer in ``model`` (multi-bit ones included)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LsqQuantizer)]


def dead_steps(model: nn.Module) -> list[str]:
    """Names of the learned steps at a bound (``LsqQuantizer.at_bound``): a run with any of them
    has a quantizer that no longer learns, and its accuracy is not the method's."""
    return [name for name, q in lsq_quantizers(model) if q.at_bound()]


def freeze_steps(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Stop learning the weight and input steps of ``layers`` (they keep their calibrated
    init); returns the parameter names frozen. The QAT protocols freeze the fixed W8A8 first
    and last layers this way: their 8-bit steps need no training, and a trained 8-bit
    classifier step was the one that SGD drove to zero (issue 14)."""
    frozen = []
    for name in layers:
        module = model.get_submodule(name)
        for role in ("weight_quantizer", "input_quantizer"):
            quantizer = getattr(module, role, None)
            if isinstance(quantizer, LsqQuantizer):
                quantizer.step.requires_grad_(False)
                frozen.append(f"{name}.{role}.step")
    return frozen
