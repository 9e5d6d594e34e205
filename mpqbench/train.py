"""Quantization-aware training.

QAT runs one loop, ``qat_train``, with an interchangeable ``TrainStep`` (registry
``TRAIN_STEPS``): ``sgd`` (plain LSQ QAT), ``saq`` (sharpness-aware, Liu, Cai, Zhuang) and
``limpq_joint`` (LIMPQ's joint indicator training, Tang et al. 2022), so two protocols differ
only in their step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from mpqbench import distributed
from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.loop import LoopHistory, LoopPlan, run_loop
from mpqbench.quant.modules import lsq_quantizers, quant_layers
from mpqbench.quant.multibit import set_bits
from mpqbench.registry import Registry

# --- Quantization-aware training: one loop, interchangeable steps -------------------------


@dataclass(frozen=True)
class QatConfig:
    """SGD (Nesterov) with a cosine schedule from ``lr`` to ``lr_min`` over all steps.

    ``max_batches_per_epoch`` shortens epochs (quick and smoke profiles); ``grad_clip_value``
    clips every gradient element to ``[-v, v]`` before the optimizer step (LIMPQ: 1);
    ``checkpoint_every``: steps between resume checkpoints; ``step_weight_decay``: the weight
    decay of the quantizer steps (ziplab/SAQ decays its clip values with the weights').
    """

    epochs: int
    batch_size: int = 128
    lr: float = 0.01
    lr_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    step_weight_decay: float = 0.0
    label_smoothing: float = 0.0
    grad_clip_value: float | None = None
    max_batches_per_epoch: int | None = None
    checkpoint_every: int = 50
    seed: int = 0

    @classmethod
    def from_dict(cls, spec: dict, seed: int) -> QatConfig:
        """From params.yaml (``profiles.<p>.qat`` plus a method's overrides)."""
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise MpqbenchError(f"unknown QAT settings {sorted(unknown)}; known: "
                                f"{sorted(cls.__dataclass_fields__)}")
        if "epochs" not in spec:
            raise MpqbenchError("QAT settings need 'epochs' (profiles.<profile>.qat in "
                                "params.yaml)")
        for key, value in spec.items():
            optional = key in ("grad_clip_value", "max_batches_per_epoch")
            if key == "nesterov" or (optional and value is None):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise MpqbenchError(f"QAT setting {key} must be a number >= 0, got {value!r}")
        return cls(**{**spec, "seed": seed})

    def steps_per_epoch(self, images: int) -> int:
        steps = -(-images // self.batch_size)
        return steps if self.max_batches_per_epoch is None else min(steps,
                                                                    self.max_batches_per_epoch)


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainStep:
    """One optimizer step on one batch; subclasses differ in how they get the gradient.

    ``__call__`` returns the losses it measured (``loss`` first: the loss the step reports)
    and leaves the optimizer stepped. ``forward_passes`` counts passes over the batch.
    """

    passes_per_step = 1

    def __init__(self) -> None:
        self.forward_passes = 0
        self.forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def setup(self, model: nn.Module, forward: nn.Module | None = None) -> None:
        """Called once before training with the model it will train; ``forward`` runs the
        passes (the DDP wrapper when distributed, else the model)."""
        self.forward = forward if forward is not None else model

    @torch.no_grad()
    def prime(self, model: nn.Module, x: torch.Tensor) -> None:
        """Initialize every quantizer the step will use from the global batch ``x`` (the
        first forward would, from each rank's own slice); BN statistics are left as they were.
        """
        _forward_keeping_bn_stats(model, x)

    def _pass(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              criterion: Criterion) -> torch.Tensor:
        self.forward_passes += 1
        loss = criterion((self.forward or model)(x), y)
        loss.backward()
        return loss.detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 optimizer: torch.optim.Optimizer, criterion: Criterion,
                 clip_value: float | None = None) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


TRAIN_STEPS: Registry[Callable[..., TrainStep]] = Registry("training step")


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _bn_stats(norms: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """Copies of every BN's running statistics (and affine parameters), to restore later."""
    return [{k: v.clone() for k, v in bn.state_dict().items()} for bn in norms]


def _restore_bn_stats(norms: list[nn.Module], saved: list[dict[str, torch.Tensor]]) -> None:
    for bn, stats in zip(norms, saved, strict=True):
        bn.load_state_dict(stats)


def _forward_keeping_bn_stats(model: nn.Module, x: torch.Tensor) -> None:
    norms = _batch_norms(model)
    saved = _bn_stats(norms)
    model(x)
    _restore_bn_stats(norms, saved)


def _clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   clip_value: float | None) -> None:
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(model.parameters(), clip_value)
    optimizer.step()


@TRAIN_STEPS.register("sgd")
class PlainStep(TrainStep):
    """Plain QAT: forward, backward through the straight-through estimator, step."""

    def __call__(self, model, x, y, optimizer, criterion, clip_value=None):
        optimizer.zero_grad(set_to_none=True)
        loss = self._pass(model, x, y, criterion)
        _clip_and_step(model, optimizer, clip_value)
        return {"loss": loss.item()}


def qat_parameter_groups(model: nn.Module, weight_decay: float,
                         step_weight_decay: float = 0.0) -> list[dict]:
    """Two groups: quantizer steps (``step_weight_decay``), everything else
    (``weight_decay``)."""
    steps, others = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (steps if "quantizer." in name else others).append(param)
    return [{"params": others, "weight_decay": weight_decay},
            {"params": steps, "weight_decay": step_weight_decay}]


def check_health(model: nn.Module, losses: dict[str, float], where: str,
                 dead_step_seen: dict[str, int] | None = None, step: int = 0,
                 quantizers: list[tuple[str, nn.Module]] | None = None) -> None:
    """Stop a run whose numbers went wrong silently: a loss that is not finite, or a learned
    quantizer step at a bound (``LsqQuantizer.at_bound``: a step there passes no gradient
    and never comes back, so the run would go on training a model it can no longer fix).
    With ``dead_step_seen`` (LIMPQ's indicator training, where a step at the authors' clamp
    is a finding about that indicator) dead steps are recorded there with the first step
    they were seen at, instead of stopping the run. ``quantizers``: the model's
    ``lsq_quantizers``, listed once by the caller instead of at every step."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise MpqbenchError(f"{where}: loss is not finite ({bad}); lower the learning rate or "
                            "check the data")
    listed = lsq_quantizers(model) if quantizers is None else quantizers
    dead = [name for name, q in listed if q.at_bound()]
    if dead and dead_step_seen is not None:
        for name in dead:
            dead_step_seen.setdefault(name, step)
    elif dead:
        raise MpqbenchError(f"{where}: learned quantizer steps at a bound, no longer trained: "
                            f"{', '.join(dead[:8])}{' ...' if len(dead) > 8 else ''}; lower "
                            "the learning rate, or freeze these steps")


class _StepState:
    """A training step's own state (its RNG, its pass count) as one resumable object."""

    def __init__(self, step: TrainStep) -> None:
        self.step = step

    def state_dict(self) -> dict:
        return {"step_state": self.step.state_dict(), "forward_passes": self.step.forward_passes}

    def load_state_dict(self, state: dict) -> None:
        self.step.load_state_dict(state["step_state"])
        self.step.forward_passes = state["forward_passes"]


def qat_train(
    model: nn.Module,
    train: Split,
    config: QatConfig,
    step: TrainStep,
    device: torch.device | str = "cpu",
    resume_path: str | Path | None = None,
    desc: str = "QAT",
    resume_tag: str = "",
    record_dead_steps: bool = False,
) -> dict:
    """Train ``model`` in place with ``step`` (``loop.run_loop``); returns ``{"epochs": [...],
    "steps": [...], "dead_steps": {...}}``.

    ``steps`` holds every step's losses and wall seconds (loss curves, cost per step);
    ``epochs`` the mean loss and summed step seconds (train top-1 is not measured: steps may
    run several passes). With ``resume_path`` the state is saved every ``checkpoint_every``
    steps and at the end of each epoch, and an interrupted run resumes there with the same
    result; a saved state whose config, step or ``resume_tag`` (e.g. a fingerprint of the
    start model and policy) differs is ignored.

    Every step is checked (``check_health``): a loss that is not finite or a learned step at a
    bound stops the run with an error; with ``record_dead_steps`` dead steps are listed in
    ``history["dead_steps"]`` (quantizer -> first step seen) instead.
    """
    model.to(device).train()
    per_epoch = config.steps_per_epoch(len(train))
    if per_epoch == 0:
        raise MpqbenchError(f"{desc}: the training split is empty or max_batches_per_epoch is 0;"
                            " nothing to train on")
    total = max(config.epochs * per_epoch, 1)
    optimizer = torch.optim.SGD(qat_parameter_groups(model, config.weight_decay,
                                                     config.step_weight_decay), lr=config.lr,
                                momentum=config.momentum, nesterov=config.nesterov)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                           eta_min=config.lr_min)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    forward = model
    if distributed.rank_and_world()[1] > 1:
        first, _ = next(iter(train.batches(config.batch_size, shuffle=True, augment=True,
                                           seed=config.seed)))
        step.prime(model, first.to(device))  # the same quantizer init on every rank
        forward = distributed.wrap(model)
    step.setup(model, forward)
    quantizers = lsq_quantizers(model)

    def checked(done: int, losses: dict[str, float], history: LoopHistory) -> None:
        check_health(model, losses, f"{desc}, step {done}",
                     history.events if record_dead_steps else None, done, quantizers)

    history = run_loop(
        LoopPlan(config.epochs, per_epoch, config.batch_size, config.seed,
                 config.checkpoint_every), train,
        lambda x, y: step(model, x, y, optimizer, criterion, config.grad_clip_value),
        {"model": model, "optimizer": optimizer, "scheduler": scheduler,
         "step": _StepState(step)}, scheduler=scheduler,
        before_epoch=lambda epoch: model.train(), after_step=checked,
        after_epoch=lambda epoch: distributed.broadcast_buffers_(model),  # rank 0's BN stats
        prepare=lambda x, y: distributed.local_slice(x.to(device), y.to(device)),
        resume_path=resume_path,
        identity={"config": asdict(config), "step": type(step).__name__, "tag": resume_tag},
        saves=distributed.is_main(), desc=desc)
    epochs = []
    for epoch in range(1, config.epochs + 1):
        steps = history.epoch(epoch)
        epochs.append({"epoch": epoch,
                       "train_loss": sum(s["loss"] for s in steps) / max(len(steps), 1),
                       "seconds": sum(s["seconds"] for s in steps), "steps": len(steps)})
    model.eval()
    return {"epochs": epochs, "steps": history.steps, "dead_steps": history.events}


@TRAIN_STEPS.register("saq")
class SaqStep(TrainStep):
    """Sharpness-aware QAT (Liu, Cai, Zhuang, "Sharpness-aware quantization for deep neural
    networks"), with the paper's three ways of combining SAM's perturbation
    ``eps = rho * g / ||g||_2`` with quantization:

    1. ``L(Q(w) + eps(w))``: ``g`` taken at the latent weights, ``eps`` added to ``Q(w)``;
    2. ``L(Q(w + eps(w)))``: the latent weights perturbed, then quantized;
    3. SAQ, ``L(Q(w) + eps(Q(w)))``: ``g`` taken at the quantized weights, ``eps`` added to
       them after quantization and held constant; the latent weights get the second pass's
       gradient through the straight-through estimator.

    ``||g||`` is one norm over the weight gradients (case 3: at the quantized weights) and the
    gradients of the other trained parameters (biases, BN affine parameters; the quantizer
    steps only with ``perturb_steps``), which are perturbed in place by their own ``eps`` for
    the second pass and restored bit for bit before the optimizer step. ``every`` /
    ``probability``: a fresh perturbation every ``k`` steps or with probability ``p``; other
    steps run one pass at the last perturbation (half the cost).

    ``perturb_space``: ``weight_standardized`` (default) takes the weight part of the ascent
    in the units of each layer's weight standardized per output channel, ``(w - mu) / sigma``,
    as the authors' models do (ziplab/SAQ, ``models/LIQ_wn_qsam.py``: they quantize and
    perturb the standardized tensor, whose elements are of order 1): the gradient is
    ``sigma * dL/dw`` there, and the step ``eps`` moves the raw weight by ``sigma * eps``.
    So ``rho`` means what the authors' ``rho`` means (0.4 on CIFAR W4A4). ``raw`` perturbs the
    raw weights directly (about 1% of each layer's weight norm at rho 0.4 on ResNet-20,
    against the authors' 0.03%). ``perturb_steps``: perturb the quantizer steps too (the
    authors do not: ``include_wclip=False``). ``bn_stats``: ``both`` lets both passes update
    the BN running statistics (the authors), ``first`` restores them after the second pass.
    """

    SPACES = ("weight_standardized", "raw")

    def __init__(self, rho: float = 0.4, case: int = 3, every: int = 1,
                 probability: float | None = None, seed: int = 0,
                 perturb_space: str = "weight_standardized", perturb_steps: bool = False,
                 bn_stats: str = "both") -> None:
        super().__init__()
        if case not in (1, 2, 3):
            raise MpqbenchError(f"SAQ case must be 1, 2 or 3, got {case!r}")
        if rho < 0 or every < 1 or (probability is not None and not 0 < probability <= 1):
            raise MpqbenchError(f"SAQ needs rho >= 0, every >= 1 and 0 < probability <= 1 "
                                f"(got rho={rho}, every={every}, probability={probability})")
        if perturb_space not in self.SPACES:
            raise MpqbenchError(f"SAQ perturb_space must be one of {', '.join(self.SPACES)}, "
                                f"got {perturb_space!r}")
        if bn_stats not in ("both", "first"):
            raise MpqbenchError(f"SAQ bn_stats must be 'both' or 'first', got {bn_stats!r}")
        self.rho, self.case, self.every, self.probability = rho, case, every, probability
        self.perturb_space, self.perturb_steps, self.bn_stats = (perturb_space, perturb_steps,
                                                                 bn_stats)
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0
        self.refreshes = 0
        self.eps_weights: dict[str, torch.Tensor] | None = None
        self.eps_others: dict[str, torch.Tensor] | None = None

    def setup(self, model: nn.Module, forward: nn.Module | None = None) -> None:
        super().setup(model, forward)
        self.layers = [(n, m) for n, m in quant_layers(model) if m.weight_quantizer is not None]
        latent = {id(m.weight) for _, m in self.layers}
        self.others = [(n, p) for n, p in model.named_parameters()
                       if p.requires_grad and id(p) not in latent
                       and (self.perturb_steps or "quantizer." not in n)]
        self.norms = _batch_norms(model)

    def _weight_scale(self, module: nn.Module) -> torch.Tensor | None:
        """sigma per output channel (shape broadcastable to the weight) in the
        weight-standardized space, None in the raw space."""
        if self.perturb_space == "raw":
            return None
        w = module.weight.detach()
        sigma = w.reshape(w.shape[0], -1).std(dim=1).clamp(min=1e-12)
        return sigma.reshape(-1, *([1] * (w.dim() - 1)))

    def _due(self) -> bool:
        if self.eps_weights is None:
            return True
        if self.probability is not None:
            return bool(torch.rand((), generator=self.generator) < self.probability)
        return self.calls % self.every == 0

    def perturbation(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     criterion: Criterion) -> torch.Tensor:
        """The first pass: sets ``eps_weights`` / ``eps_others``; returns the loss at Q(w)."""
        at_quantized = self.case == 3
        if at_quantized:  # a zero offset on Q(w): its gradient is dL/dQ(w)
            for _, m in self.layers:
                m.weight_delta = torch.zeros_like(m.weight, requires_grad=True)
        try:
            loss = self._pass(model, x, y, criterion)
            weight_grads = {n: (m.weight_delta if at_quantized else m.weight).grad
                            for n, m in self.layers}
            if at_quantized:  # not parameters: DDP did not average these gradients
                distributed.average_([g for g in weight_grads.values() if g is not None])
        finally:
            for _, m in self.layers:
                m.weight_delta = None
        sigmas = {n: self._weight_scale(m) for n, m in self.layers}
        # the ascent direction in the chosen space: dL/d(w / sigma) = sigma * dL/dw
        weight_grads = {n: (g if g is None or sigmas[n] is None else g * sigmas[n])
                        for n, g in weight_grads.items()}
        other_grads = {n: p.grad for n, p in self.others}
        grads = {k: g for k, g in (weight_grads | other_grads).items() if g is not None}
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).float()
        scale = self.rho / (norm + 1e-12)
        zero = {n: torch.zeros_like(m.weight) for n, m in self.layers}
        # eps in the chosen space, mapped back to raw weight units (times sigma)
        self.eps_weights = {n: (zero[n] if g is None else g * scale if sigmas[n] is None
                                else g * scale * sigmas[n])
                            for n, g in weight_grads.items()}
        self.eps_others = {n: (g * scale if g is not None else torch.zeros_like(p))
                           for (n, p), g in zip(self.others, other_grads.values(), strict=True)}
        self.refreshes += 1
        return loss

    def perturbed_pass(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       criterion: Criterion, keep_bn_stats: bool) -> torch.Tensor:
        """Forward and backward at the perturbed point; every perturbed tensor is restored."""
        saved = {n: p.detach().clone() for n, p in self.others}
        saved_latent = {}
        saved_stats = _bn_stats(self.norms) if keep_bn_stats else None
        with torch.no_grad():
            for n, p in self.others:
                p.add_(self.eps_others[n])
            for n, m in self.layers:
                if self.case == 2:
                    saved_latent[n] = m.weight.detach().clone()
                    m.weight.add_(self.eps_weights[n])
                else:
                    m.weight_delta = self.eps_weights[n]
        try:
            loss = self._pass(model, x, y, criterion)
        finally:
            with torch.no_grad():
                for n, p in self.others:
                    p.copy_(saved[n])
                for n, m in self.layers:
                    m.weight_delta = None
                    if n in saved_latent:
                        m.weight.copy_(saved_latent[n])
                if saved_stats is not None:
                    _restore_bn_stats(self.norms, saved_stats)
        return loss

    def __call__(self, model, x, y, optimizer, criterion, clip_value=None):
        optimizer.zero_grad(set_to_none=True)
        losses = {}
        refresh = self._due()
        if refresh:
            losses["loss_at_q"] = self.perturbation(model, x, y, criterion).item()
            optimizer.zero_grad(set_to_none=True)
        loss = self.perturbed_pass(model, x, y, criterion,
                                   keep_bn_stats=refresh and self.bn_stats == "first")
        self.calls += 1
        _clip_and_step(model, optimizer, clip_value)
        return {"loss": loss.item(), **losses, "refreshed": float(refresh)}

    def state_dict(self) -> dict:
        return {"calls": self.calls, "refreshes": self.refreshes,
                "generator": self.generator.get_state(),
                "eps_weights": self.eps_weights, "eps_others": self.eps_others}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.refreshes = state["calls"], state["refreshes"]
        self.generator.set_state(state["generator"])
        self.eps_weights, self.eps_others = state["eps_weights"], state["eps_others"]


@TRAIN_STEPS.register("limpq_joint")
class JointIndicatorStep(TrainStep):
    """LIMPQ's joint indicator training step (Tang et al., ECCV 2022, authors' code).

    On one batch: every candidate width ``b`` (largest first) with all ``layers`` at
    ``W=b, A=b``, then one random mixed setting (each layer an independent ``b`` shared by
    its weight and input), each a forward and backward pass whose gradients accumulate; then
    the clip and one optimizer step: ``|B| + 1`` passes. The model comes from
    ``quant.multibit.multibit_model``.
    """

    def __init__(self, layers: list[str], candidates: list[int], seed: int = 0) -> None:
        super().__init__()
        if not layers or not candidates:
            raise MpqbenchError("the joint indicator step needs layers and candidate widths")
        self.layers = list(layers)
        self.candidates = sorted(set(candidates))
        self.generator = torch.Generator().manual_seed(seed)
        self.passes_per_step = len(self.candidates) + 1

    @torch.no_grad()
    def prime(self, model: nn.Module, x: torch.Tensor) -> None:
        for b in reversed(self.candidates):
            set_bits(model, dict.fromkeys(self.layers, b))
            _forward_keeping_bn_stats(model, x)

    def random_setting(self) -> dict[str, int]:
        picks = torch.randint(len(self.candidates), (len(self.layers),), generator=self.generator)
        return {name: self.candidates[i] for name, i in zip(self.layers, picks.tolist(),
                                                             strict=True)}

    def __call__(self, model, x, y, optimizer, criterion, clip_value=None):
        optimizer.zero_grad(set_to_none=True)
        losses = {}
        for b in reversed(self.candidates):
            set_bits(model, dict.fromkeys(self.layers, b))
            losses[f"W{b}A{b}"] = self._pass(model, x, y, criterion).item()
        set_bits(model, self.random_setting())
        losses["mixed"] = self._pass(model, x, y, criterion).item()
        _clip_and_step(model, optimizer, clip_value)
        return {"loss": sum(losses.values()) / len(losses), **losses}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
