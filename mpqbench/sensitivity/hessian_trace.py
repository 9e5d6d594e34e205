"""Hessian-trace sensitivity, HAWQ-V2 (Dong et al., NeurIPS 2020).

``score_l(b) = (Tr(H_l) / n_l) * ||Q_b(W_l) - W_l||^2`` with ``Tr(H_l)`` estimated by
Hutchinson's method: ``E[v^T H v]`` over Rademacher ``v``, each ``H v`` a Hessian-vector product
of the mean cross-entropy over the Hessian images. One ``v`` spans every layer at once; the
per-layer block ``v_l^T (H v)_l`` is an unbiased estimate of ``Tr(H_l)`` (the cross terms have
zero mean). Sampling stops when the summed trace's running mean changes by less than ``tol``
(relative) or after ``max_iters`` samples; the standard error of each layer's mean is kept.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.runtime import progress
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    table_frame,
    weight_errors,
)


def hutchinson_traces(
    model: nn.Module, layers: list[str], batches: list[tuple[torch.Tensor, torch.Tensor]],
    max_iters: int = 100, tol: float = 1e-3, min_iters: int = 2, seed: int = 0,
) -> tuple[dict[str, float], dict[str, float], int]:
    """Per layer: (mean of the Hutchinson samples, their standard error, samples drawn)."""
    model = model.eval()
    params = [model.get_submodule(name).weight for name in layers]
    generator = torch.Generator().manual_seed(seed)
    total = sum(len(x) for x, _ in batches)
    samples: list[torch.Tensor] = []
    previous = None
    for _ in progress(range(max_iters), "Hutchinson", total=max_iters):
        vs = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
        hv = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
            for acc, h in zip(hv, torch.autograd.grad(dot, params), strict=True):
                acc += h * (len(x) / total)
        samples.append(torch.stack([(v * h).sum() for v, h in zip(vs, hv, strict=True)]).cpu())
        running = torch.stack(samples).mean(0).sum().item()
        if (previous is not None and len(samples) >= min_iters
                and abs(running - previous) <= tol * (abs(previous) + 1e-12)):
            break
        previous = running
    stacked = torch.stack(samples).double()  # (iterations, layers)
    mean = stacked.mean(0)
    stderr = (stacked.std(0, unbiased=True) / len(samples) ** 0.5 if len(samples) > 1
              else torch.full_like(mean, float("inf")))
    return ({name: float(m) for name, m in zip(layers, mean, strict=True)},
            {name: float(s) for name, s in zip(layers, stderr, strict=True)}, len(samples))


@METRICS.register("hessian_trace")
def hessian_trace(ctx: SensitivityContext, max_iters: int = 100, tol: float = 1e-3,
                  max_images: int | None = None) -> SensitivityTable:
    """``max_images``: the first images of the calibration batches used for the Hessian."""
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
        traces, stderr, iters = hutchinson_traces(ctx.model, ctx.layers, batches, max_iters,
                                                  tol, seed=ctx.seed)
    weights = ctx.weights()
    scores = {(name, b): traces[name] / weights[name].numel() * err.squared_norm
              for (name, b), err in weight_errors(ctx).items()}
    return SensitivityTable(
        table_frame(scores, ctx.a_bits), "hessian_trace", 0.0, images * iters,
        2 * images * iters, images,
        {"iterations": iters, "trace": traces, "trace_stderr": stderr, "tol": tol,
         # a negative mean trace (noise, or a layer at a saddle) gives negative scores, which
         # the ILP reads as "no harm at any width"; kept as measured, and listed here
         "negative_traces": sorted(name for name, t in traces.items() if t < 0)})
