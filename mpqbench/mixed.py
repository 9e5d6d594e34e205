"""Sensitivity-based allocation at declared budgets, and a method's sweep of it.

``sweep`` runs every (table, budget) pair as SensitivityTable -> solver + Budget -> Allocation
-> ``protocols.run_policy`` -> RunRecord, so two methods that differ only in their metric
produce runs that differ only in that metric. ``uniform_references`` adds the uniform runs a
mixed policy must beat, ``hawq_v3_sweep`` HAWQ-V3's own setting, ``solver_agreement`` a check
that two solvers choose the same policy.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from mpqbench.context import Context
from mpqbench.cost import Bits, Budget, LayerCost, cost_summary
from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.naming import budget_label, protocol_tag, run_id
from mpqbench.protocols import run_policy, search_allocation, uniform_allocation
from mpqbench.search import search, uniform_bits
from mpqbench.sensitivity import SensitivityTable, restrict_table


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


def sweep(ctx: Context, tables: dict[str, SensitivityTable], budgets: list[Budget],
          protocol: str, *, method: str, solver: str = "ilp",
          calibration: Split | list[torch.Tensor] | None = None,
          extra: dict[str, Any] | None = None, label: str = "metric") -> pd.DataFrame:
    """Every table at every budget through ``protocol``; one row per run, ``label`` naming the
    table. Run ids: ``<method>-<model>-<table>-<budget>-<protocol>``."""
    rows = []
    for budget in budgets:
        for name, table in tables.items():
            outcome = run_policy(
                ctx, search_allocation(ctx, table, budget, solver), protocol, method=method,
                run_id=run_id(method, ctx.model_name, name, budget_label(budget),
                              protocol_tag(protocol)),
                calibration=calibration, extra={"table": name, **(extra or {})})
            rows.append(outcome.row(budget=budget_label(budget), **{label: name}))
    return pd.DataFrame(rows)


def uniform_references(ctx: Context, budgets: list[Budget], w_choices: list[int], a_bits: int,
                       protocol: str, *, method: str, label: str = "metric") -> pd.DataFrame:
    """The uniform run each size budget's mixed policies must beat (``uniform_at_least``),
    once per width, through the same protocol. Run ids: ``<method>-<model>-WxAy-<protocol>``."""
    rows, done = [], set()
    for budget in budgets:
        wa = uniform_at_least(ctx.layers, budget, w_choices, a_bits, ctx.fixed)
        if wa is None or wa in done:
            continue
        done.add(wa)
        config = f"W{wa[0]}A{wa[1]}"
        outcome = run_policy(ctx, uniform_allocation(ctx, config), protocol, method=method,
                             run_id=run_id(method, ctx.model_name, config,
                                           protocol_tag(protocol)))
        rows.append(outcome.row(budget="uniform", **{label: f"uniform {config}"}))
    return pd.DataFrame(rows)


def hawq_v3_sweep(ctx: Context, table: SensitivityTable, bits: list[int], ratios: list[float],
                  kinds: list[str], a_bits: int, protocol: str) -> pd.DataFrame:
    """HAWQ-V3's setting (Yao et al. 2021): weights in ``bits`` (e.g. {4, 8}), budgets at
    ``r`` of the way from all-low to all-high; ``size`` at ``a_bits`` activations, ``bitops``
    with W = A. Method ``hawq_v3``; run ids ``hawq_v3-<model>-<kind>-r<r>-<protocol>``."""
    rows = []
    for kind in kinds:
        restricted = restrict_table(table, bits, a_bits if kind == "size" else None)
        for r in ratios:
            budget = interpolated_budget(ctx.layers, ctx.fixed, r, kind, min(bits), max(bits),
                                         a_bits)
            outcome = run_policy(
                ctx, search_allocation(ctx, restricted, budget), protocol, method="hawq_v3",
                run_id=run_id("hawq_v3", ctx.model_name, kind, f"r{r:g}", protocol_tag(protocol)),
                extra={"hawq_v3": {"kind": kind, "r": r}})
            rows.append(outcome.row(kind=kind, r=r))
    return pd.DataFrame(rows)


def solver_agreement(ctx: Context, tables: dict[str, SensitivityTable], budgets: list[Budget],
                     solvers: tuple[str, ...] = ("ilp", "pareto")) -> pd.DataFrame:
    """Each solver on each (table, budget): its objective and seconds, and whether all chose
    the same policy."""
    rows = []
    for budget in budgets:
        for name, table in tables.items():
            found = {s: search(s, table.frame, ctx.layers, budget, ctx.fixed) for s in solvers}
            first = found[solvers[0]].bits
            rows.append({"table": name, "budget": budget_label(budget),
                         "same policy": all(f.bits == first for f in found.values()),
                         **{f"{s} objective": f.objective for s, f in found.items()},
                         **{f"{s} s": f.seconds for s, f in found.items()}})
    return pd.DataFrame(rows)
