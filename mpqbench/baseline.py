"""The FP baseline run: the adapted model evaluated on test, recorded as a RunRecord."""

from __future__ import annotations

import time

import torch

from mpqbench.context import Context
from mpqbench.cost import cost_summary
from mpqbench.evaluate import EvalResult, limit_images, per_class_accuracy
from mpqbench.results import RunRecord, encode_correct, provenance


def fp_baseline_run(ctx: Context) -> tuple[RunRecord, EvalResult, torch.Tensor]:
    """Evaluate the context's FP model on test; returns its RunRecord, the result and the
    per-class top-1 (percent, one value a class)."""
    start = time.perf_counter()
    model, splits, device, eval_cfg = ctx.model, ctx.splits, ctx.device, ctx.profile.eval
    result = ctx.evaluate(model, desc="FP test")
    test = limit_images(splits.test, eval_cfg.max_images)
    per_class = per_class_accuracy(model, test, splits.num_classes, eval_cfg.batch_size, device)
    cost = cost_summary(ctx.layers, {layer.name: (32, 32) for layer in ctx.layers})
    record = RunRecord(
        run_id=f"fp-{ctx.model_name}",
        method="fp",
        model=ctx.model_name,
        dataset=splits.dataset,
        dataset_variant=splits.variant,
        protocol="none",
        cost=cost,
        accuracy={
            "fp_top1": result.top1, "top1": result.top1, "top5": result.top5,
            "loss": result.loss, "drop": 0.0, "test_images": result.images,
        },
        timing={"sensitivity_s": 0.0, "search_s": 0.0, "protocol_s": 0.0,
                "total_s": time.perf_counter() - start,
                "eval_images_per_s": result.images_per_s},
        provenance=provenance(ctx.seed, ctx.profile.name, device),
        extra={"per_class_top1": dict(zip(splits.classes, per_class.tolist(), strict=True)),
               "test_correct": encode_correct(result.correct)},
    )
    return record, result, per_class
