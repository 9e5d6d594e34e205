"""Task-loss sensitivity on labeled data, Lee, Cho, Lee, Song, Choi (2021), reconstructed.

``score_l(b) = E[CE(f(x; W_l <- Q_b(W_l)), y)] - E[CE(f(x; W_l), y)]``, measured end to end
so the error propagates through every later layer. ``others`` sets the rest of the network:
``fp`` (every other layer at full precision) or ``low`` (every other searchable layer held at
``reference_bits``, so the metric sees the interaction with a quantized network). Any data
source: the context's batches may be synthetic or real images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mpqbench.errors import MpqbenchError
from mpqbench.runtime import progress
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    replaced_weights,
    table_frame,
    weight_errors,
)

OTHERS = ("fp", "low")


@torch.no_grad()
def mean_loss(ctx: SensitivityContext) -> float:
    """Mean cross-entropy of the context's model over its batches."""
    total = sum(F.cross_entropy(ctx.model(x), y, reduction="sum").item() for x, y in ctx.batches)
    return total / ctx.images


@METRICS.register("task_loss")
def task_loss(ctx: SensitivityContext, others: str = "low", reference_bits: int = 4
              ) -> SensitivityTable:
    if others not in OTHERS:
        raise MpqbenchError(f"task_loss others={others!r}: use one of {OTHERS}")
    weights = ctx.weights()
    errors = weight_errors(ctx)
    if others == "low" and reference_bits not in ctx.bits:
        ref_ctx = SensitivityContext(ctx.model, ctx.layers, [reference_bits], ctx.a_bits,
                                     ctx.batches, ctx.weight_observer, ctx.seed)
        errors.update(weight_errors(ref_ctx))
    base = ({name: weights[name] + errors[name, reference_bits].delta for name in ctx.layers}
            if others == "low" else {})
    scores, passes = {}, 0
    for name in progress(ctx.layers, "task loss", total=len(ctx.layers)):
        context = {k: v for k, v in base.items() if k != name}  # layer l itself at FP
        with replaced_weights(ctx.model, context):
            reference = mean_loss(ctx)
            passes += 1
            for b in ctx.bits:
                with replaced_weights(ctx.model, {name: weights[name] + errors[name, b].delta}):
                    scores[name, b] = mean_loss(ctx) - reference
                passes += 1
    return SensitivityTable(table_frame(scores, ctx.a_bits), "task_loss", 0.0,
                            passes * ctx.images, 0, ctx.images,
                            {"others": others, "reference_bits": reference_bits})
