"""Synthetic data for data-free quantization: two generators with the same budget.

- ``labeled``: Lee, Cho, Lee, Song, Choi (2021), reconstructed (the paper's text was not
  available): from ``x ~ N(0, 1)``, with target classes drawn balanced, minimize
  ``CE(f(jitter(x)), t) + tv * TV(x) + l2 * mean(x^2)`` over ``x`` with Adam, where ``t`` is
  a soft target (``soft_target`` on the class, the rest spread evenly; a hard one-hot target
  drives the loss to 0 on every image, so task-loss differences vanish: issue 14) and
  ``jitter`` a random shift of up to ``jitter`` pixels and a random flip each step. No
  BatchNorm statistics, so networks without BN work too. Returns ``(x, y)``.
- ``labeled_bn``: the same plus ``bn * `` ZeroQ's BN-statistics loss (in the manner of
  DeepInversion, Yin et al. 2020): an upper reference for what BN statistics add, not Lee et
  al.'s method.
- ``zeroq``: ZeroQ (Cai et al., CVPR 2020), as the authors' ``distill_data.py``: from
  ``x ~ N(0, 1)``, minimize, over every BN layer, the squared distance between each image's
  per-channel mean and standard deviation of the BN layer's input and the running statistics,
  averaged over the batch, plus the same for the image against mean 0 and std 1; Adam with
  reduce-on-plateau. Labels are the FP model's own predictions (ZeroQ's data carries none).

Both work in the model's input space (normalized images), batch by batch, seeded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.errors import MpqbenchError
from mpqbench.registry import Registry
from mpqbench.runtime import progress


@dataclass(frozen=True)
class SynthConfig:
    """Generation settings (``method_cfg.data_free.synth`` in params.yaml).

    images: how many; batch_size: images optimized together; iters: Adam steps a batch;
    lr: Adam's learning rate; tv / l2: weights of the total-variation and L2 image priors
    (labeled generators only); soft_target: the target probability of the drawn class (1.0:
    a hard one-hot target); jitter: the largest random shift, in pixels, applied with a
    random horizontal flip at every step (0: off); bn: weight of the BN-statistics loss
    (``labeled_bn`` only); patience / min_lr: ZeroQ's reduce-on-plateau schedule.
    """

    images: int = 256
    batch_size: int = 32
    iters: int = 500
    lr: float = 0.1
    tv: float = 1e-4
    l2: float = 1e-5
    soft_target: float = 1.0
    jitter: int = 0
    bn: float = 0.0
    patience: int = 100
    min_lr: float = 1e-4

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | None) -> SynthConfig:
        spec = dict(spec or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise MpqbenchError(f"unknown synth settings {unknown}; known: {sorted(known)}")
        config = cls(**spec)
        if config.images < 1 or config.batch_size < 1 or config.iters < 1:
            raise MpqbenchError("synth images, batch_size and iters must be >= 1")
        if not 0.0 < config.soft_target <= 1.0 or config.jitter < 0 or config.bn < 0:
            raise MpqbenchError(f"synth soft_target must be in (0, 1], jitter and bn >= 0 "
                                f"(got {config.soft_target}, {config.jitter}, {config.bn})")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SynthData:
    """Generated images (N, C, H, W) in the model's input space, their labels (N,), the wall
    seconds of generation and the loss of each step, averaged over batches."""

    x: torch.Tensor
    y: torch.Tensor
    generator: str
    seconds: float
    loss_history: list[float] = field(default_factory=list)
    fp_agreement: float | None = None  # share of images the FP model labels as ``y`` (0..1)

    def batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.x[i:i + batch_size], self.y[i:i + batch_size])
                for i in range(0, len(self.x), batch_size)]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image, summed over the batch."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return (dh + dw).sum()


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels, every class ``n // num_classes`` or one more times, in seeded order."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator)]


GENERATORS: Registry = Registry("synthetic-data generator")


def jitter_and_flip(x: torch.Tensor, max_shift: int, generator: torch.Generator
                    ) -> torch.Tensor:
    """``x`` rolled by a random shift of up to ``max_shift`` pixels in each direction, then
    flipped left-right with probability 1/2 (one draw for the whole batch)."""
    if max_shift <= 0:
        return x
    dh, dw = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)).tolist()
    x = torch.roll(x, shifts=(dh, dw), dims=(2, 3))
    if bool(torch.rand((), generator=generator) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


def soft_targets(y: torch.Tensor, num_classes: int, on_class: float) -> torch.Tensor:
    """Target distributions: ``on_class`` on ``y``, the rest spread evenly over the others."""
    off = (1.0 - on_class) / max(num_classes - 1, 1)
    targets = torch.full((len(y), num_classes), off, device=y.device)
    return targets.scatter_(1, y[:, None], on_class)


def _labeled_loss(model: nn.Module, config: SynthConfig, num_classes: int,
                  generator: torch.Generator, with_bn: bool = False):
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen = jitter_and_flip(x, config.jitter, generator)
        stats = _BnStatistics(model) if with_bn else None
        try:
            logits = model(seen)
        finally:
            if stats is not None:
                stats.remove()
        ce = F.cross_entropy(logits, soft_targets(y, num_classes, config.soft_target))
        total = ce + config.tv * total_variation(x) / len(x) + config.l2 * x.pow(2).mean()
        if stats is not None:
            total = total + config.bn * sum(stats.terms)
        return total

    return loss


def statistics_loss(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    eps: float = 0.0) -> torch.Tensor:
    """ZeroQ's statistics term (amirgholami/ZeroQ, ``distill_data.py``): each image's
    per-channel mean and standard deviation (over its pixels, unbiased variance, ``eps``
    inside the root) against ``mean`` / ``std`` (C,), squared distances summed over channels
    and averaged over the images."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    image_mean = flat.mean(dim=2)
    image_std = torch.sqrt(flat.var(dim=2) + eps)
    n = x.shape[0]
    return ((image_mean - mean).pow(2).sum() + (image_std - std).pow(2).sum()) / n


class _BnStatistics:
    """Forward hooks that collect each BN layer's statistics term during one forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] = []
        self.bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.handles = [bn.register_forward_pre_hook(self.hook) for bn in self.bns]

    def hook(self, bn: nn.BatchNorm2d, inputs) -> None:
        self.terms.append(statistics_loss(inputs[0], bn.running_mean,
                                          torch.sqrt(bn.running_var + bn.eps), bn.eps))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def zeroq_bn_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ZeroQ's loss for images ``x``: the per-image statistics of every BN input against the
    BN's running statistics, plus the image's against mean 0 and std 1."""
    stats = _BnStatistics(model)
    try:
        model(x)
    finally:
        stats.remove()
    zeros = torch.zeros(x.shape[1], device=x.device)
    return sum(stats.terms) + statistics_loss(x, zeros, torch.ones_like(zeros))


def _generate(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
              config: SynthConfig, device: torch.device | str, seed: int, name: str,
              loss_of) -> SynthData:
    start = time.perf_counter()
    was_training = model.training
    trainable = [p.requires_grad for p in model.parameters()]
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    labels = balanced_labels(config.images, num_classes, generator)
    xs, history = [], torch.zeros(config.iters)
    batches = list(range(0, config.images, config.batch_size))
    try:
        for first in progress(batches, f"{name} data", total=len(batches)):
            y = labels[first:first + config.batch_size].to(device)
            x = torch.randn(len(y), *input_shape, generator=generator).to(device)
            x.requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=config.lr)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, patience=config.patience, min_lr=config.min_lr)
            for it in range(config.iters):
                loss = loss_of(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if name == "zeroq":
                    plateau.step(loss.item())
                history[it] += loss.item() * len(y) / config.images
            xs.append(x.detach())
        x = torch.cat(xs)
        if name == "zeroq":  # no labels of its own: the FP model's predictions
            with torch.no_grad():
                labels = torch.cat([model(x[i:i + 256]).argmax(1).cpu()
                                    for i in range(0, len(x), 256)])
    finally:  # the model as the caller left it
        for p, flag in zip(model.parameters(), trainable, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return SynthData(x.cpu(), labels.cpu(), name, time.perf_counter() - start, history.tolist())


@GENERATORS.register("labeled")
def generate_labeled(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                     config: SynthConfig, device: torch.device | str = "cpu",
                     seed: int = 0) -> SynthData:
    """Labeled synthetic images, no BN statistics used (works on BN-free networks)."""
    jitter = torch.Generator().manual_seed(seed + 1)
    return _generate(model, input_shape, num_classes, config, device, seed, "labeled",
                     _labeled_loss(model, config, num_classes, jitter))


@GENERATORS.register("labeled_bn")
def generate_labeled_bn(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                        config: SynthConfig, device: torch.device | str = "cpu",
                        seed: int = 0) -> SynthData:
    """Labeled synthetic images that also match the BN statistics (weight ``config.bn``): an
    upper reference (DeepInversion-style), not the data-free method under test."""
    _require_batchnorm(model, "labeled_bn")
    if config.bn <= 0:
        raise MpqbenchError("the labeled_bn generator needs synth bn > 0 (the weight of the "
                            "BN-statistics loss); set it in method_cfg.data_free.synth")
    jitter = torch.Generator().manual_seed(seed + 1)
    return _generate(model, input_shape, num_classes, config, device, seed, "labeled_bn",
                     _labeled_loss(model, config, num_classes, jitter, with_bn=True))


def _require_batchnorm(model: nn.Module, name: str) -> None:
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise MpqbenchError(
            f"the {name} generator matches BatchNorm statistics, and {type(model).__name__} has "
            "no BatchNorm2d layer (was BN folded?); pass the unfolded model or use the "
            "'labeled' generator, which needs none")


@GENERATORS.register("zeroq")
def distill_zeroq(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                  config: SynthConfig, device: torch.device | str = "cpu",
                  seed: int = 0) -> SynthData:
    """ZeroQ's distilled images; the model must have BatchNorm layers."""
    _require_batchnorm(model, "zeroq")
    return _generate(model, input_shape, num_classes, config, device, seed, "zeroq",
                     lambda x, y: zeroq_bn_loss(model, x))


def generate(name: str, model: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
             config: SynthConfig, device: torch.device | str = "cpu", seed: int = 0
             ) -> SynthData:
    """Run the generator registered as ``name`` (labeled, labeled_bn, zeroq)."""
    return GENERATORS.get(name)(model, input_shape, num_classes, config, device, seed)


def generate_all(model: nn.Module, splits: Any, configs: dict[str, SynthConfig],
                 device: torch.device | str = "cpu", seed: int = 0) -> dict[str, SynthData]:
    """Every generator of ``configs`` (name -> settings) in order, each with ``seed``; then the
    share of each set's images the FP ``model`` labels as their target (``fp_agreement``)."""
    made = {name: generate(name, model, splits.input_shape, splits.num_classes, config, device,
                           seed) for name, config in configs.items()}
    for data in made.values():
        with torch.no_grad():
            predicted = model(data.x.to(device)).argmax(1).cpu()
        data.fp_agreement = (predicted == data.y).float().mean().item()
    return made


class NoRealData:
    """A split that refuses every use: the data-free path must never read real images."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise MpqbenchError(f"the data-free path tried to read the real {self._name} split "
                            f"(.{attr}); only synthetic images may be used there")

    def __len__(self) -> int:
        raise MpqbenchError(f"the data-free path tried to read the real {self._name} split")


def without_real_training_data(splits: Any) -> Any:
    """A copy of ``splits`` whose train and val splits raise on any use (test stays: it is
    where the result is reported)."""
    return replace(splits, train=NoRealData("train"), val=NoRealData("val"))
