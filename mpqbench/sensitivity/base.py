"""The SensitivityTable, the context every metric reads, and the weight-error helper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from mpqbench.quant.modules import weight_scheme
from mpqbench.quant.observers import make_observer
from mpqbench.quant.quantizers import fake_quantize
from mpqbench.registry import Registry

TABLE_COLUMNS = ["layer", "w_bits", "a_bits", "score"]


@dataclass
class SensitivityTable:
    """Scores per (layer, w_bits, a_bits) and what they cost to measure.

    ``forward_images`` / ``backward_images``: images pushed through a forward / backward pass
    (a Hessian-vector product counts two backward passes); ``seconds``: wall time.
    """

    frame: pd.DataFrame
    metric: str
    seconds: float
    forward_images: int
    backward_images: int
    images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self) -> dict[str, float]:
        return {"seconds": self.seconds, "forward_images": self.forward_images,
                "backward_images": self.backward_images, "images": self.images}


@dataclass
class SensitivityContext:
    """What a metric reads.

    model: the BN-folded FP model in eval mode (the weights PTQ quantizes);
    layers: names of the searchable layers; bits: candidate weight widths; a_bits: the
    activation width of every row; batches: (images, labels) on the model's device;
    weight_observer: the range observer PTQ uses for weights.
    """

    model: nn.Module
    layers: list[str]
    bits: list[int]
    a_bits: int
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    weight_observer: str = "mse"
    seed: int = 0

    @property
    def images(self) -> int:
        return sum(len(x) for x, _ in self.batches)

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: self.model.get_submodule(name).weight for name in self.layers}


@dataclass
class WeightError:
    """``Q_b(W) - W`` of one layer: the error tensor and the per-channel step ``Delta``."""

    delta: torch.Tensor  # same shape as the weight
    step: torch.Tensor  # (out_channels,)

    @property
    def squared_norm(self) -> float:
        return float(self.delta.pow(2).sum())


@torch.no_grad()
def weight_errors(ctx: SensitivityContext) -> dict[tuple[str, int], WeightError]:
    """``Q_b(W_l) - W_l`` for every searchable layer and candidate width, with PTQ's quantizer
    (per output channel, symmetric, range from ``ctx.weight_observer``, nearest rounding)."""
    errors = {}
    for name, weight in ctx.weights().items():
        for b in ctx.bits:
            if b >= 32:  # full precision: no error
                errors[name, b] = WeightError(torch.zeros_like(weight),
                                              torch.zeros(weight.shape[0]))
                continue
            scheme = weight_scheme(b)
            observer = make_observer(ctx.weight_observer, scheme)
            observer.observe(weight)
            scale, zero = observer.qparams()
            q = fake_quantize(weight, scale, zero, scheme.qmin, scheme.qmax, axis=0)
            errors[name, b] = WeightError(q - weight, scale)
    return errors


@contextmanager
def replaced_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily give layers other weights (same shapes); restored on exit."""
    saved = {}
    try:
        with torch.no_grad():
            for name, weight in weights.items():
                param = model.get_submodule(name).weight
                saved[name] = param.detach().clone()
                param.copy_(weight)
        yield
    finally:
        with torch.no_grad():
            for name, weight in saved.items():
                model.get_submodule(name).weight.copy_(weight)


Metric = Callable[..., SensitivityTable]
METRICS: Registry[Metric] = Registry("sensitivity metric")


def table_frame(scores: dict[tuple[str, int], float], a_bits: int) -> pd.DataFrame:
    rows = [(name, b, a_bits, float(score)) for (name, b), score in scores.items()]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def compute(name: str, ctx: SensitivityContext, **options: Any) -> SensitivityTable:
    """Run the metric registered as ``name``; its wall time covers everything it does."""
    start = time.perf_counter()
    table = METRICS.get(name)(ctx, **options)
    table.seconds = time.perf_counter() - start
    return table


def metric_options(settings: dict[str, Any], method_cfg: dict[str, Any], metric: str
                   ) -> dict[str, Any]:
    """A metric's options: the method's, then the profile's ``sensitivity.<metric>`` on top."""
    return {**(method_cfg.get("metrics", {}).get(metric) or {}),
            **(settings.get("sensitivity", {}).get(metric) or {})}


def restrict_table(table: SensitivityTable, bits: list[int], a_bits: int | None = None
                   ) -> SensitivityTable:
    """The rows of ``table`` at weight widths ``bits``, with activations at ``a_bits``
    (``None``: at the weight width, W=A as in HAWQ-V3's BitOps setting). Scores are kept:
    they measure the weight error only."""
    frame = table.frame[table.frame.w_bits.isin(bits)].copy()
    frame["a_bits"] = frame.w_bits if a_bits is None else a_bits
    frame = frame.drop_duplicates(["layer", "w_bits", "a_bits"]).reset_index(drop=True)
    return SensitivityTable(frame, table.metric, table.seconds, table.forward_images,
                            table.backward_images, table.images, dict(table.extra))
