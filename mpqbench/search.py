"""Bit allocation: an ILP on PuLP's CBC over per-layer choices, and uniform policies.

The ILP (as in HAWQ-V3, Yao et al. 2021, and LIMPQ, Tang et al. 2022): binary ``x[l, c]`` for
every searchable layer ``l`` and choice ``c = (w_bits, a_bits)``, ``sum_c x[l, c] = 1``,
minimize ``sum score[l, c] * x[l, c]`` under every linear limit of the Budget; fixed layers
add constants to each limit. Tied layers take the same choice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import pulp

from mpqbench.cost import Bits, Budget, LayerCost, Limit
from mpqbench.errors import MpqbenchError

TABLE_COLUMNS = ("layer", "w_bits", "a_bits", "score")


@dataclass
class SearchResult:
    """The chosen bits of every layer (fixed ones included) and how the solver got there."""

    bits: Bits
    objective: float
    status: str
    seconds: float
    solver: str
    totals: dict[str, float] = field(default_factory=dict)  # each limit's total, its unit


def _choices(table: pd.DataFrame) -> dict[str, list[tuple[tuple[int, int], float]]]:
    missing = set(TABLE_COLUMNS) - set(table.columns)
    if missing:
        raise MpqbenchError(f"sensitivity table lacks columns {sorted(missing)}")
    if table[["layer", "w_bits", "a_bits"]].duplicated().any():
        raise MpqbenchError("sensitivity table has duplicate (layer, w_bits, a_bits) rows")
    choices: dict[str, list[tuple[tuple[int, int], float]]] = {}
    for row in table.sort_values(["layer", "w_bits", "a_bits"]).itertuples(index=False):
        choices.setdefault(row.layer, []).append(
            ((int(row.w_bits), int(row.a_bits)), float(row.score)))
    return choices


def _check_feasible(limits: list[Limit], searchable: list[LayerCost], fixed_layers, fixed: Bits,
                    choices) -> None:
    for limit in limits:
        smallest = sum(limit.coefficient(layer, *fixed[layer.name]) for layer in fixed_layers)
        smallest += sum(min(limit.coefficient(layer, *c) for c, _ in choices[layer.name])
                        for layer in searchable)
        if smallest > limit.bound * (1 + 1e-9):
            raise MpqbenchError(
                f"budget {limit.name} = {limit.bound / limit.scale:.6g} {limit.unit} is "
                f"infeasible: the smallest feasible value is {smallest / limit.scale:.6g} "
                f"{limit.unit} (every searchable layer at its cheapest choice)"
            )


def solve_ilp(
    table: pd.DataFrame,
    layers: list[LayerCost],
    budget: Budget,
    fixed: Bits | None = None,
    ties: Iterable[Iterable[str]] = (),
    time_limit_s: float | None = None,
) -> SearchResult:
    """Minimize the summed score of one choice per searchable layer under ``budget``.

    ``table``: a SensitivityTable (columns layer, w_bits, a_bits, score; lower is better)
    covering every layer not in ``fixed``; ``fixed``: ``{layer: (w_bits, a_bits)}`` outside
    the search but inside every limit. Anything but an optimal solve raises.
    """
    fixed = dict(fixed or {})
    choices = _choices(table)
    names = {layer.name for layer in layers}
    unknown = (set(choices) | set(fixed)) - names
    if unknown:
        raise MpqbenchError(f"layers {sorted(unknown)} are not quantizable layers of the model")
    searchable = [layer for layer in layers if layer.name not in fixed]
    fixed_layers = [layer for layer in layers if layer.name in fixed]
    uncovered = [layer.name for layer in searchable if layer.name not in choices]
    if uncovered:
        raise MpqbenchError(f"the sensitivity table has no rows for layers {uncovered}")
    limits = budget.limits(layers, fixed)
    _check_feasible(limits, searchable, fixed_layers, fixed, choices)

    start = time.perf_counter()
    problem = pulp.LpProblem("bit_allocation", pulp.LpMinimize)
    x = {
        (layer.name, c): pulp.LpVariable(f"x_{i}_{j}", cat="Binary")
        for i, layer in enumerate(searchable)
        for j, (c, _) in enumerate(choices[layer.name])
    }
    problem += pulp.lpSum(score * x[layer.name, c] for layer in searchable
                          for c, score in choices[layer.name])
    for layer in searchable:
        problem += pulp.lpSum(x[layer.name, c] for c, _ in choices[layer.name]) == 1
    for limit in limits:
        constant = sum(limit.coefficient(layer, *fixed[layer.name]) for layer in fixed_layers)
        # constraints in the limit's reporting unit keep CBC's coefficients well scaled
        problem += pulp.lpSum(
            limit.coefficient(layer, *c) / limit.scale * x[layer.name, c]
            for layer in searchable for c, _ in choices[layer.name]
        ) <= (limit.bound - constant) / limit.scale + 1e-9
    for group in ties:
        group = list(group)
        for other in group[1:]:
            if [c for c, _ in choices[other]] != [c for c, _ in choices[group[0]]]:
                raise MpqbenchError(f"tied layers {group[0]} and {other} have different choices")
            for c, _ in choices[group[0]]:
                problem += x[group[0], c] == x[other, c]
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, threads=1)
    problem.solve(solver)
    seconds = time.perf_counter() - start
    status = pulp.LpStatus[problem.status]
    if status != "Optimal" or problem.sol_status != pulp.LpSolutionOptimal:
        raise MpqbenchError(
            f"the ILP ended with status {status!r} (solution status {problem.sol_status}); "
            f"loosen the budget (limits: {budget.describe()}) or check tied layers"
        )
    bits: Bits = dict(fixed)
    objective = 0.0
    for layer in searchable:
        chosen = [(c, s) for c, s in choices[layer.name] if x[layer.name, c].value() > 0.5]
        (c, s), = chosen
        bits[layer.name] = c
        objective += s
    totals = {f"{lim.name} ({lim.unit})": lim.total(layers, bits) / lim.scale for lim in limits}
    for lim in limits:  # re-check through cost_summary, not the coefficients used above
        if lim.recount(layers, bits) > lim.bound * (1 + 1e-6):
            raise MpqbenchError(f"the solver's policy breaks the {lim.name} budget")
    return SearchResult(bits, objective, status, seconds, "ilp-cbc", totals)


def uniform_bits(layers: list[LayerCost], w_bits: int, a_bits: int,
                 fixed: Bits | None = None) -> Bits:
    """Every layer at W{w_bits}A{a_bits}, except the fixed ones."""
    fixed = fixed or {}
    return {layer.name: fixed.get(layer.name, (w_bits, a_bits)) for layer in layers}
