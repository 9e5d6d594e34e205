"""Turning a quantized model's evaluation into a RunRecord, the same way for every method."""

from __future__ import annotations

from typing import Any

import torch

from mpqbench.cost import Bits, LayerCost, cost_summary
from mpqbench.data import Splits
from mpqbench.evaluate import EvalResult
from mpqbench.quant.policy import Policy
from mpqbench.results import RunRecord, encode_correct, provenance


def quantized_run_record(
    *,
    run_id: str,
    method: str,
    model_name: str,
    splits: Splits,
    layers: list[LayerCost],
    bits: Bits,
    result: EvalResult,
    fp_top1: float,
    protocol: str,
    settings: dict[str, Any],
    device: torch.device | str,
    timing: dict[str, float],
    fixed: Bits | None = None,
    metric: str | None = None,
    solver: str | None = None,
    budget: dict[str, Any] | None = None,
    bit_candidates: list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """A RunRecord of a quantized model: cost from ``bits``, accuracy from ``result``.

    ``fp_top1`` must come from the same test images (percent); ``timing`` in wall seconds
    with at least ``total_s``; the other phases default to 0.
    """
    policy = Policy.from_bits(bits, method, budget=budget, bit_candidates=bit_candidates,
                              fixed=sorted(fixed or {}))
    return RunRecord(
        run_id=run_id,
        method=method,
        model=model_name,
        dataset=splits.dataset,
        dataset_variant=splits.variant,
        protocol=protocol,
        metric=metric,
        solver=solver,
        budget=budget,
        bit_candidates=bit_candidates,
        policy=policy.to_dict(),
        cost=cost_summary(layers, bits),
        accuracy={"fp_top1": fp_top1, "top1": result.top1, "top5": result.top5,
                  "loss": result.loss, "drop": fp_top1 - result.top1,
                  "test_images": result.images},
        timing={"sensitivity_s": 0.0, "search_s": 0.0, "protocol_s": 0.0, **timing,
                "eval_images_per_s": result.images_per_s},
        provenance=provenance(settings["seed"], settings["profile"], device),
        extra={**(extra or {}), "test_correct": encode_correct(result.correct)},
    )
