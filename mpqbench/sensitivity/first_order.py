"""First-order (gradient) sensitivity, Chauhan, Tiwari, Vikram (ICCV Workshops 2023).

Reconstructed (see the method card): HAWQ-V2's score with the Hessian trace replaced by the
empirical Fisher trace,
``score_l(b) = (F_l / n_l) * ||Q_b(W_l) - W_l||^2``, ``F_l = mean_i ||grad_{W_l} loss(x_i)||^2``,
per-sample squared gradients averaged over the calibration images (never the square of the
mean gradient, which is near zero at a minimum). Variant ``taylor``: the first-order Taylor
term ``|g_l . (Q_b(W_l) - W_l)|`` with ``g_l`` the mean gradient.
"""

from __future__ import annotations

from mpqbench.errors import MpqbenchError
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    table_frame,
    weight_errors,
)
from mpqbench.sensitivity.gradients import per_sample_gradient_stats

VARIANTS = ("fisher", "taylor")


@METRICS.register("first_order")
def first_order(ctx: SensitivityContext, variant: str = "fisher", labels: str = "dataset",
                chunk: int = 64) -> SensitivityTable:
    if variant not in VARIANTS:
        raise MpqbenchError(f"first_order variant {variant!r}: use one of {VARIANTS}")
    stats = per_sample_gradient_stats(ctx.model, ctx.layers, ctx.batches, labels, chunk)
    errors = weight_errors(ctx)
    weights = ctx.weights()
    scores = {}
    for (name, b), err in errors.items():
        if variant == "fisher":
            scores[name, b] = stats.sq_norm[name] / weights[name].numel() * err.squared_norm
        else:
            scores[name, b] = abs(float((stats.mean_grad[name] * err.delta).sum()))
    return SensitivityTable(
        table_frame(scores, ctx.a_bits), "first_order", 0.0, stats.images, stats.images,
        stats.images, {"variant": variant, "labels": labels,
                       "fisher_trace": stats.sq_norm})
