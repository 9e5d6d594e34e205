"""Hessian-trace sensitivity, HAWQ-V2 (Dong et al., NeurIPS 2020).

``score_l(b) = (Tr(H_l) / n_l) * ||Q_b(W_l) - W_l||^2`` with ``Tr(H_l)`` estimated by
Hutchinson's method: ``E[v^T H v]`` over Rademacher ``v``, each ``H v`` a Hessian-vector product
of the mean cross-entropy over the Hessian images. One ``v`` spans every layer at once; the
per-layer block ``v_l^T (H v)_l`` is an unbiased estimate of ``Tr(H_l)`` (the cross terms have
zero mean); with per-layer probes (the default) each layer gets its own ``v`` and no cross
terms. Each layer is sampled until the standard error of its mean is at most ``rel_se`` of
its magnitude (or ``max_iters``); a trace that is not significantly positive is floored at
its detection limit and flagged (``TraceEstimate.floored``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.errors import MpqbenchError
from mpqbench.runtime import progress
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    table_frame,
    weight_errors,
)

PROBES = ("per_layer", "joint")
Z_95 = 1.96  # a trace within 1.96 standard errors of zero is not significantly positive


@dataclass
class TraceEstimate:
    """Hutchinson estimates per layer: ``mean`` of the samples, ``stderr`` of that mean,
    ``samples`` drawn for the layer; ``converged``: relative standard error <= the target."""

    mean: dict[str, float]
    stderr: dict[str, float]
    samples: dict[str, int]
    converged: dict[str, bool]

    def floored(self, z: float = Z_95) -> tuple[dict[str, float], list[str]]:
        """Traces for scoring, and the layers floored: a trace that is negative or not
        significantly positive (``mean <= z * stderr``) is raised to ``z * stderr``, the
        smallest trace the samples could tell from zero, so that noise is never read as
        "free to quantize" (a negative trace gives negative scores, which the ILP takes as
        no harm at any width)."""
        used, floored = {}, []
        for name, mean in self.mean.items():
            limit = z * self.stderr[name]
            if mean <= limit:
                floored.append(name)
                used[name] = max(limit, 1e-12)
            else:
                used[name] = mean
        return used, floored


def _hessian_vector(model: nn.Module, params: list[torch.Tensor], vs: list[torch.Tensor],
                    batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """``H v`` of the mean cross-entropy over ``batches``, for the ``params`` blocks."""
    total = sum(len(x) for x, _ in batches)
    hv = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
        for acc, h in zip(hv, torch.autograd.grad(dot, params), strict=True):
            acc += h * (len(x) / total)
    return hv


def hutchinson_traces(
    model: nn.Module, layers: list[str], batches: list[tuple[torch.Tensor, torch.Tensor]],
    max_iters: int = 100, rel_se: float = 0.05, min_iters: int = 8, seed: int = 0,
    probes: str = "per_layer",
) -> TraceEstimate:
    """Hutchinson's estimate of every layer's Hessian trace, stopped per layer.

    ``probes``: ``per_layer`` draws a Rademacher ``v`` on one layer's weights at a time, so a
    layer's samples carry no cross terms from other layers (one Hessian-vector product per
    layer and sample); ``joint`` draws one ``v`` over all layers (one product per sample;
    ``v_l^T (H v)_l`` is unbiased but carries the other layers' cross terms as noise), as
    PyHessian's whole-model trace does. A layer stops being sampled once it has ``min_iters``
    samples and the standard error of its mean is at most ``rel_se`` of its magnitude
    (PyHessian stops on the change of the summed trace, which leaves small layers'
    estimates dominated by noise: issue 14); ``max_iters`` caps the samples, and a layer
    that reaches it unconverged is marked so.
    """
    if probes not in PROBES:
        raise MpqbenchError(f"unknown Hutchinson probes {probes!r}; known: {', '.join(PROBES)}")
    model = model.eval()
    params = {name: model.get_submodule(name).weight for name in layers}
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, list[float]] = {name: [] for name in layers}
    active = list(layers)

    def settled(name: str) -> bool:
        values = samples[name]
        if len(values) < max(min_iters, 2):
            return False
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.std() / len(values) ** 0.5) <= rel_se * abs(float(t.mean()))

    bar = progress(range(max_iters), "Hutchinson", total=max_iters)
    for _ in bar:
        if not active:
            break
        groups = [active] if probes == "joint" else [[name] for name in active]
        for group in groups:
            ps = [params[name] for name in group]
            vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in ps]
            hv = _hessian_vector(model, ps, vs, batches)
            for name, v, h in zip(group, vs, hv, strict=True):
                samples[name].append(float((v * h).sum()))
        active = [name for name in active if not settled(name)]
    mean, stderr = {}, {}
    for name in layers:
        t = torch.tensor(samples[name], dtype=torch.float64)
        mean[name] = float(t.mean())
        stderr[name] = float(t.std() / len(t) ** 0.5) if len(t) > 1 else float("inf")
    return TraceEstimate(mean, stderr, {n: len(v) for n, v in samples.items()},
                         {name: name not in active for name in layers})


@METRICS.register("hessian_trace")
def hessian_trace(ctx: SensitivityContext, max_iters: int = 100, rel_se: float = 0.05,
                  min_iters: int = 8, probes: str = "per_layer",
                  max_images: int | None = None) -> SensitivityTable:
    """``max_images``: the first images of the calibration batches used for the Hessian.

    Scores use the floored traces (``TraceEstimate.floored``); the table's ``extra`` keeps
    the measured means, standard errors, samples per layer, and the layers floored or not
    converged, so that the notebook and the report can flag them.
    """
    batches = ctx.batches
    if max_images is not None:
        kept, left = [], max_images
        for x, y in batches:
            if left <= 0:
                break
            kept.append((x[:left], y[:left]))
            left -= len(kept[-1][0])
        batches = kept
    images = sum(len(x) for x, _ in batches)
    with torch.enable_grad():
        estimate = hutchinson_traces(ctx.model, ctx.layers, batches, max_iters, rel_se,
                                     min_iters, seed=ctx.seed, probes=probes)
    traces, floored = estimate.floored()
    products = (sum(estimate.samples.values()) if probes == "per_layer"
                else max(estimate.samples.values()))
    weights = ctx.weights()
    scores = {(name, b): traces[name] / weights[name].numel() * err.squared_norm
              for (name, b), err in weight_errors(ctx).items()}
    return SensitivityTable(
        table_frame(scores, ctx.a_bits), "hessian_trace", 0.0, images * products,
        2 * images * products, images,
        {"iterations": max(estimate.samples.values()), "samples": estimate.samples,
         "hessian_vector_products": products, "probes": probes,
         "trace": estimate.mean, "trace_stderr": estimate.stderr, "trace_used": traces,
         "rel_se_target": rel_se,
         "unconverged": sorted(n for n, ok in estimate.converged.items() if not ok),
         "floored": sorted(floored),
         "negative_traces": sorted(name for name, t in estimate.mean.items() if t < 0)})


def trace_report(extra: dict) -> pd.DataFrame:
    """One row per layer from a hessian_trace table's ``extra``: the measured trace, its
    standard error, relative standard error, samples, the trace the scores used, and a flag
    (``floored``: not significantly positive; ``unconverged``: the sample cap was reached
    before ``rel_se``)."""
    frame = pd.DataFrame({"trace": extra["trace"], "stderr": extra["trace_stderr"],
                          "samples": extra["samples"], "trace_used": extra["trace_used"]})
    frame["rel_se"] = frame["stderr"] / frame["trace"].abs()
    floored, unconverged = set(extra["floored"]), set(extra["unconverged"])
    frame["flag"] = [", ".join(f for f, on in (("floored", n in floored),
                                              ("unconverged", n in unconverged)) if on)
                     for n in frame.index]
    return frame[["trace", "stderr", "rel_se", "samples", "trace_used", "flag"]]
