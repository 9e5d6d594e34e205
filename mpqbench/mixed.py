"""A mixed-precision run: SensitivityTable -> solver + Budget -> Policy -> PTQ -> RunRecord.

Every sensitivity-based method goes through ``mixed_ptq_run``, so two methods that differ
only in their metric produce runs that differ only in that metric.
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
import torch.nn as nn

from mpqbench.cost import Bits, Budget, LayerCost, cost_summary, layer_costs
from mpqbench.data import Splits
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.ptq import PtqConfig, PtqResult, run_ptq
from mpqbench.results import RunRecord
from mpqbench.runs import quantized_run_record
from mpqbench.search import SearchResult, search, uniform_bits
from mpqbench.sensitivity import SensitivityTable


def budget_label(budget: Budget) -> str:
    """A short, file-name-safe label: ``ratio8``, ``size0.1MiB``, ``bitops0.5G``, ``W4A4eq``,
    joined by ``_`` when the budget has several limits."""
    parts = []
    for key, value in budget.describe().items():
        if key == "bitops_equiv":
            parts.append(f"W{value[0]}A{value[1]}eq")
        else:
            short = {"compression_ratio": "ratio", "size_mib": "size", "bitops_g": "bitops",
                     "mean_w_bits": "meanw"}[key]
            unit = {"size_mib": "MiB", "bitops_g": "G"}.get(key, "")
            parts.append(f"{short}{value:g}{unit}")
    return re.sub(r"[^A-Za-z0-9.]+", "_", "_".join(parts))


def interpolated_budget(layers: list[LayerCost], fixed: Bits, r: float, kind: str,
                        low: int = 4, high: int = 8, a_bits: int = 8) -> Budget:
    """HAWQ-V3's budget: ``cost(all-low) + r * (cost(all-high) - cost(all-low))``.

    ``kind``: ``size`` (weight bits, activations at ``a_bits``) or ``bitops`` (W and A both at
    low / high bits). Fixed layers keep their bits in both ends.
    """
    if kind not in ("size", "bitops"):
        raise MpqbenchError(f"interpolated budget kind {kind!r}: use size or bitops")
    if kind == "size":
        lo = cost_summary(layers, uniform_bits(layers, low, a_bits, fixed))["size_mib"]
        hi = cost_summary(layers, uniform_bits(layers, high, a_bits, fixed))["size_mib"]
        return Budget(size_mib=lo + r * (hi - lo))
    lo = cost_summary(layers, uniform_bits(layers, low, low, fixed))["bitops_g"]
    hi = cost_summary(layers, uniform_bits(layers, high, high, fixed))["bitops_g"]
    return Budget(bitops_g=lo + r * (hi - lo))


def uniform_at_least(layers: list[LayerCost], budget: Budget, w_choices: list[int], a_bits: int,
                     fixed: Bits) -> tuple[int, int] | None:
    """The smallest uniform (w, a_bits) whose size is at least the budget's size bound: the
    uniform point a mixed policy under ``budget`` must beat (equal or larger size)."""
    (limit,) = [lim for lim in budget.limits(layers, fixed) if lim.kind != "bitops"][:1] or [None]
    if limit is None:
        return None
    for w in sorted(w_choices):
        bits = uniform_bits(layers, w, a_bits, fixed)
        if limit.total(layers, bits) >= limit.bound * (1 - 1e-9):
            return w, a_bits
    return None


def mixed_ptq_run(
    *, model: nn.Module, splits: Splits, model_name: str, settings: dict[str, Any],
    device: torch.device | str, fp_top1: float, table: SensitivityTable, budget: Budget,
    fixed: Bits, method: str, rounding: str, solver: str = "ilp", run_id: str | None = None,
    extra: dict[str, Any] | None = None, calibration: list[torch.Tensor] | None = None,
) -> tuple[RunRecord, SearchResult, PtqResult]:
    """Solve ``table`` under ``budget``, quantize with PTQ, evaluate on test, record it all.

    ``calibration``: image batches for PTQ (synthetic data); default: drawn from train.
    """
    start = time.perf_counter()
    layers = layer_costs(model, splits.input_shape)
    result = search(solver, table.frame, layers, budget, fixed)
    ptq_config = PtqConfig.from_dict(settings.get("ptq"))
    ptq = run_ptq(model, result.bits, splits.train if calibration is None else calibration,
                  splits.input_shape, rounding, ptq_config, device, settings["seed"])
    eval_cfg = settings["eval"]
    evaluation = evaluate(ptq.model, splits.test, eval_cfg["batch_size"], device,
                          eval_cfg.get("max_images"), desc=f"{table.metric} {budget_label(budget)}")
    candidates = sorted({int(b) for b in table.frame.w_bits})
    record = quantized_run_record(
        run_id=run_id or f"{method}-{model_name}-{table.metric}-{budget_label(budget)}-{rounding}",
        method=method, model_name=model_name, splits=splits, layers=layers, bits=result.bits,
        result=evaluation, fp_top1=fp_top1, protocol=f"ptq-{rounding}", settings=settings,
        device=device, fixed=fixed, metric=table.metric, solver=result.solver,
        budget=budget.describe(), bit_candidates=candidates,
        timing={"sensitivity_s": table.seconds, "search_s": result.seconds,
                "protocol_s": ptq.seconds["total_s"],
                "total_s": table.seconds + time.perf_counter() - start},
        extra={"calibration": "train" if calibration is None else "given batches",
               "sensitivity_cost": table.cost(), "sensitivity_extra": table.extra,
               "solver_status": result.status, "objective": result.objective,
               "totals": result.totals, "ptq": ptq_config.to_dict(), **(extra or {})},
    )
    return record, result, ptq


def uniform_reference_run(
    *, model: nn.Module, splits: Splits, model_name: str, settings: dict[str, Any],
    device: torch.device | str, fp_top1: float, layers: list[LayerCost], budget: Budget,
    w_choices: list[int], a_bits: int, fixed: Bits, rounding: str, method: str,
    done: set[tuple[int, int]],
) -> RunRecord | None:
    """The uniform run a mixed policy under ``budget`` must beat (``uniform_at_least``), through
    the same PTQ protocol; ``None`` when there is none or it is already in ``done`` (updated)."""
    from mpqbench.uniform import uniform_ptq_run

    wa = uniform_at_least(layers, budget, w_choices, a_bits, fixed)
    if wa is None or wa in done:
        return None
    done.add(wa)
    record, _ = uniform_ptq_run(model, splits, model_name, settings, device, fp_top1,
                                f"W{wa[0]}A{wa[1]}", rounding, method)
    return record
