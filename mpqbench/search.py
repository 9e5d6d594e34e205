"""Bit allocation: an ILP on PuLP's CBC, a Pareto DP, random and uniform policies.

The ILP (as in HAWQ-V3, Yao et al. 2021, and LIMPQ, Tang et al. 2022): binary ``x[l, c]`` for
every searchable layer ``l`` and choice ``c = (w_bits, a_bits)``, ``sum_c x[l, c] = 1``,
minimize ``sum score[l, c] * x[l, c]`` under every linear limit of the Budget; fixed layers
add constants to each limit. Tied layers take the same choice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd
import pulp

from mpqbench.cost import Bits, Budget, LayerCost, Limit
from mpqbench.errors import MpqbenchError
from mpqbench.registry import Registry

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


def _prepare(table: pd.DataFrame, layers: list[LayerCost], budget: Budget, fixed: Bits):
    """Checks shared by the solvers: (choices, searchable layers, fixed layers, limits)."""
    choices = _choices(table)
    unknown = (set(choices) | set(fixed)) - {layer.name for layer in layers}
    if unknown:
        raise MpqbenchError(f"layers {sorted(unknown)} are not quantizable layers of the model")
    searchable = [layer for layer in layers if layer.name not in fixed]
    fixed_layers = [layer for layer in layers if layer.name in fixed]
    uncovered = [layer.name for layer in searchable if layer.name not in choices]
    if uncovered:
        raise MpqbenchError(f"the sensitivity table has no rows for layers {uncovered}")
    limits = budget.limits(layers, fixed)
    _check_feasible(limits, searchable, fixed_layers, fixed, choices)
    return choices, searchable, fixed_layers, limits


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
    choices, searchable, fixed_layers, limits = _prepare(table, layers, budget, fixed)

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


def _size_bound(budget: Budget, layers: list[LayerCost], fixed: Bits) -> float:
    """The tightest weight-bit bound of a budget made only of size limits (size, ratio, mean)."""
    limits = budget.limits(layers, fixed)
    others = [lim.name for lim in limits if lim.kind == "bitops"]
    if others or not limits:
        raise MpqbenchError(
            f"the Pareto solver takes size budgets only (size_mib, compression_ratio, "
            f"mean_w_bits); got {budget.describe()}; use the ILP for BitOps limits")
    return min(lim.bound for lim in limits)


def solve_pareto(
    table: pd.DataFrame, layers: list[LayerCost], budget: Budget, fixed: Bits | None = None,
) -> SearchResult:
    """Exact minimum of the summed score under one size budget, by dynamic programming.

    Layers are added one at a time to a frontier of (weight bits, score) partial policies;
    a partial policy is dropped when another one is no larger and scores no worse (the
    Pareto frontier). Sizes are integers (weight elements x bits), so the result is exact.
    Ties on score go to the smaller size, then to the earlier choice in (w_bits, a_bits) order.
    """
    fixed = dict(fixed or {})
    choices, searchable, fixed_layers, limits = _prepare(table, layers, budget, fixed)
    bound = _size_bound(budget, layers, fixed) - sum(
        layer.params * fixed[layer.name][0] for layer in fixed_layers)

    start = time.perf_counter()
    frontier: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]  # size, score, picks
    for layer in searchable:
        options = choices[layer.name]
        grown = [(size + layer.params * c[0], score + s, picks + (j,))
                 for size, score, picks in frontier for j, (c, s) in enumerate(options)
                 if size + layer.params * c[0] <= bound]
        grown.sort(key=lambda item: (item[0], item[1], item[2]))
        frontier = []
        for item in grown:
            if not frontier or item[1] < frontier[-1][1]:
                frontier.append(item)
    size, objective, picks = min(frontier, key=lambda item: (item[1], item[0], item[2]))
    bits: Bits = dict(fixed)
    for layer, j in zip(searchable, picks, strict=True):
        bits[layer.name] = choices[layer.name][j][0]
    seconds = time.perf_counter() - start
    totals = {f"{lim.name} ({lim.unit})": lim.recount(layers, bits) / lim.scale for lim in limits}
    return SearchResult(bits, objective, "Optimal", seconds, "pareto-dp", totals)


def random_bits(
    choices: list[tuple[int, int]], layers: list[LayerCost], budget: Budget,
    fixed: Bits | None = None, seed: int = 0,
) -> Bits:
    """A random policy that meets ``budget``, the same for the same seed.

    Layers are visited in a seeded random order; each takes a choice drawn uniformly from
    those that still leave the budget reachable with every later layer at its cheapest.
    """
    fixed = dict(fixed or {})
    rng = random.Random(seed)
    limits = budget.limits(layers, fixed)
    searchable = [layer for layer in layers if layer.name not in fixed]
    options = sorted(set(choices))
    table = pd.DataFrame([(layer.name, w, a, 0.0) for layer in searchable for w, a in options],
                         columns=list(TABLE_COLUMNS))
    _check_feasible(limits, searchable, [lay for lay in layers if lay.name in fixed], fixed,
                    _choices(table))
    cheapest = {lim.name: {layer.name: min(lim.coefficient(layer, *c) for c in options)
                           for layer in searchable} for lim in limits}
    spent = {lim.name: sum(lim.coefficient(layer, *fixed[layer.name])
                           for layer in layers if layer.name in fixed) for lim in limits}
    order = list(searchable)
    rng.shuffle(order)
    bits: Bits = dict(fixed)
    for i, layer in enumerate(order):
        later = order[i + 1:]
        feasible = [c for c in options if all(
            spent[lim.name] + lim.coefficient(layer, *c)
            + sum(cheapest[lim.name][other.name] for other in later) <= lim.bound * (1 + 1e-9)
            for lim in limits)]
        if not feasible:
            raise MpqbenchError(f"no random policy meets {budget.describe()} with choices "
                                f"{options}; the limits pull towards different choices")
        bits[layer.name] = rng.choice(feasible)
        for lim in limits:
            spent[lim.name] += lim.coefficient(layer, *bits[layer.name])
    return bits


def best_uniform(
    choices: list[tuple[int, int]], layers: list[LayerCost], budget: Budget,
    fixed: Bits | None = None,
) -> Bits:
    """The highest uniform (w_bits, a_bits) among ``choices`` that meets ``budget``."""
    fixed = dict(fixed or {})
    limits = budget.limits(layers, fixed)
    for w, a in sorted(set(choices), reverse=True):
        bits = uniform_bits(layers, w, a, fixed)
        if all(lim.total(layers, bits) <= lim.bound * (1 + 1e-9) for lim in limits):
            return bits
    raise MpqbenchError(f"no uniform choice among {sorted(set(choices))} meets "
                        f"{budget.describe()}")


def _scored(table: pd.DataFrame, layers: list[LayerCost], bits: Bits, fixed: Bits, solver: str,
            seconds: float, budget: Budget) -> SearchResult:
    choices = _choices(table)
    objective = sum(dict(choices[name])[bits[name]] for name in bits if name not in fixed)
    limits = budget.limits(layers, fixed)
    totals = {f"{lim.name} ({lim.unit})": lim.recount(layers, bits) / lim.scale for lim in limits}
    return SearchResult(bits, objective, "Feasible", seconds, solver, totals)


def _table_choices(table: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted({c for options in _choices(table).values() for c, _ in options})


def solve_random(table: pd.DataFrame, layers: list[LayerCost], budget: Budget,
                 fixed: Bits | None = None, seed: int = 0) -> SearchResult:
    """``random_bits`` over the table's choices; the objective is the table's sum for it."""
    start = time.perf_counter()
    fixed = dict(fixed or {})
    bits = random_bits(_table_choices(table), layers, budget, fixed, seed)
    return _scored(table, layers, bits, fixed, "random", time.perf_counter() - start, budget)


def solve_uniform(table: pd.DataFrame, layers: list[LayerCost], budget: Budget,
                  fixed: Bits | None = None) -> SearchResult:
    """``best_uniform`` over the table's choices; the objective is the table's sum for it."""
    start = time.perf_counter()
    fixed = dict(fixed or {})
    bits = best_uniform(_table_choices(table), layers, budget, fixed)
    return _scored(table, layers, bits, fixed, "uniform", time.perf_counter() - start, budget)


SOLVERS: Registry[Callable[..., SearchResult]] = Registry("solver")
SOLVERS.add("ilp", solve_ilp)
SOLVERS.add("pareto", solve_pareto)
SOLVERS.add("random", solve_random)
SOLVERS.add("uniform", solve_uniform)


def search(solver: str, table: pd.DataFrame, layers: list[LayerCost], budget: Budget,
           fixed: Bits | None = None, **options) -> SearchResult:
    """Run the solver registered as ``solver`` (ilp, pareto, random, uniform).

    ``options``: ``ties`` and ``time_limit_s`` for the ILP, ``seed`` for random.
    """
    return SOLVERS.get(solver)(table, layers, budget, fixed, **options)
