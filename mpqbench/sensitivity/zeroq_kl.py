"""ZeroQ's sensitivity (Cai et al., CVPR 2020):
``score_l(b) = mean_j KL(f(x_j) || f_{l <- b}(x_j))``, only layer ``l`` quantized (its weights
at ``b`` bits), on whatever images the context holds (ZeroQ's distilled data by default)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mpqbench.runtime import progress
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    replaced_weights,
    table_frame,
    weight_errors,
)


@METRICS.register("zeroq_kl")
@torch.no_grad()
def zeroq_kl(ctx: SensitivityContext) -> SensitivityTable:
    reference = [F.log_softmax(ctx.model(x), dim=1) for x, _ in ctx.batches]
    weights = ctx.weights()
    errors = weight_errors(ctx)
    scores = {}
    for name in progress(ctx.layers, "ZeroQ KL", total=len(ctx.layers)):
        for b in ctx.bits:
            with replaced_weights(ctx.model, {name: weights[name] + errors[name, b].delta}):
                kl = sum(F.kl_div(F.log_softmax(ctx.model(x), dim=1), ref, log_target=True,
                                  reduction="sum").item()
                         for (x, _), ref in zip(ctx.batches, reference, strict=True))
            scores[name, b] = kl / ctx.images
    passes = 1 + len(ctx.layers) * len(ctx.bits)
    return SensitivityTable(table_frame(scores, ctx.a_bits), "zeroq_kl", 0.0,
                            passes * ctx.images, 0, ctx.images, {})
