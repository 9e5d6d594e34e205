"""FIT (Zandonati et al. 2023): the Fisher trace times a uniform-noise model of the error.

``score_l(b) = sum_c Tr(F_{l,c}) * Delta_{l,c}(b)^2 / 12``: a weight rounded on a grid of step
``Delta`` carries an error of variance ``Delta^2 / 12``, so the expected second-order loss
increase is the Fisher diagonal summed against it. ``Tr(F_{l,c})`` is the mean over images of
the squared per-sample gradient of output channel ``c``; ``Delta_{l,c}(b)`` the step PTQ's
quantizer uses for that channel at ``b`` bits. With one step per layer this is the method
card's ``Tr(F_l) * Delta_l^2 / 12``.
"""

from __future__ import annotations

from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    table_frame,
    weight_errors,
)
from mpqbench.sensitivity.gradients import per_sample_gradient_stats


@METRICS.register("fisher_fit")
def fisher_fit(ctx: SensitivityContext, labels: str = "dataset", chunk: int = 64
               ) -> SensitivityTable:
    stats = per_sample_gradient_stats(ctx.model, ctx.layers, ctx.batches, labels, chunk)
    scores = {(name, b): float((stats.sq_channel[name] * err.step.cpu().pow(2)).sum() / 12)
              for (name, b), err in weight_errors(ctx).items()}
    return SensitivityTable(
        table_frame(scores, ctx.a_bits), "fisher_fit", 0.0, stats.images, stats.images,
        stats.images, {"labels": labels, "fisher_trace": stats.sq_norm})
