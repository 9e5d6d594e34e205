"""Bit allocation: an ILP (HiGHS in process, or CBC), a Pareto DP, random and uniform policies.

The ILP (as in HAWQ-V3, Yao et al. 2021, and LIMPQ, Tang et al. 2022): binary ``x[l, c]`` for
every searchable layer ``l`` and choice ``c = (w_bits, a_bits)``, ``sum_c x[l, c] = 1``,
minimize ``sum score[l, c] * x[l, c]`` under every linear limit of the Budget; fixed layers
add constants to each limit. Tied layers take the same choice.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import highspy
import numpy as np
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
            raise MpqbenchError(limit.infeasible_message(
                smallest, "every searchable layer at its cheapest choice"))


def check_feasible(layers: list[LayerCost], budget: Budget, w_choices: list[int],
                   a_choices: list[int], fixed: Bits) -> None:
    """Refuse ``budget`` when no policy over these candidates meets it, from the cost model
    alone (seconds before any sensitivity pass): the error names the largest (ratio) or
    smallest (size, BitOps) value that every searchable layer at its cheapest choice reaches."""
    searchable = [layer for layer in layers if layer.name not in fixed]
    fixed_layers = [layer for layer in layers if layer.name in fixed]
    pairs = [((w, a), 0.0) for w in w_choices for a in a_choices]
    _check_feasible(budget.limits(layers, fixed), searchable, fixed_layers, fixed,
                    {layer.name: pairs for layer in searchable})


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


@dataclass
class _IlpModel:
    """The ILP in matrix form: ``x`` binary, rows ``lower <= A x <= upper``, minimize ``cost.x``.

    Columns are ``(layer, choice)`` in the order of ``columns``; rows are one-choice-per-layer
    equalities, one row per limit (divided by its bound), and one equality per tied pair of
    choices.
    """

    columns: list[tuple[str, tuple[int, int]]]
    cost: list[float]
    rows: list[dict[int, float]]
    lower: list[float]
    upper: list[float]


def _ilp_model(choices, searchable: list[LayerCost], fixed_layers: list[LayerCost], fixed: Bits,
               limits: list[Limit], ties: Iterable[Iterable[str]]) -> _IlpModel:
    columns = [(layer.name, c) for layer in searchable for c, _ in choices[layer.name]]
    index = {column: i for i, column in enumerate(columns)}
    cost = [score for layer in searchable for _, score in choices[layer.name]]
    rows: list[dict[int, float]] = []
    lower: list[float] = []
    upper: list[float] = []
    for layer in searchable:
        rows.append({index[layer.name, c]: 1.0 for c, _ in choices[layer.name]})
        lower.append(1.0)
        upper.append(1.0)
    for limit in limits:
        constant = sum(limit.coefficient(layer, *fixed[layer.name]) for layer in fixed_layers)
        # each limit row divided by its bound: the solvers' feasibility tolerances are then
        # relative to the budget, whatever its unit and size
        rows.append({index[layer.name, c]: limit.coefficient(layer, *c) / limit.bound
                     for layer in searchable for c, _ in choices[layer.name]})
        lower.append(-float("inf"))
        upper.append((limit.bound - constant) / limit.bound + 1e-9)
    for group in ties:
        group = list(group)
        for other in group[1:]:
            if [c for c, _ in choices[other]] != [c for c, _ in choices[group[0]]]:
                raise MpqbenchError(f"tied layers {group[0]} and {other} have different choices")
            for c, _ in choices[group[0]]:
                rows.append({index[group[0], c]: 1.0, index[other, c]: -1.0})
                lower.append(0.0)
                upper.append(0.0)
    return _IlpModel(columns, cost, rows, lower, upper)


def _quiet_highs() -> highspy.Highs:
    """A HiGHS instance without its banner, which HiGHS prints from C on file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _highs_matrix(model: _IlpModel) -> highspy.HighsLp:
    """The LP relaxation of ``model`` (bounds 0 <= x <= 1, no integrality) for HiGHS."""
    n = len(model.columns)
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = len(model.rows)
    lp.col_cost_ = np.asarray(model.cost, dtype=float)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_ = np.asarray(model.lower, dtype=float)
    lp.row_upper_ = np.asarray(model.upper, dtype=float)
    by_column: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for r, row in enumerate(model.rows):
        for j, value in row.items():
            by_column[j].append((r, value))
    starts, indices, values = [0], [], []
    for entries in by_column:
        indices.extend(r for r, _ in entries)
        values.extend(v for _, v in entries)
        starts.append(len(indices))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(indices, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(values, dtype=float)
    return lp


def _binary_columns(lp: highspy.HighsLp, keep: np.ndarray) -> highspy.HighsLp:
    """The binary program on the columns ``keep`` of ``lp`` (same rows)."""
    starts = np.asarray(lp.a_matrix_.start_)
    indices, values = np.asarray(lp.a_matrix_.index_), np.asarray(lp.a_matrix_.value_)
    spans = [np.arange(starts[j], starts[j + 1]) for j in keep]
    taken = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
    sub = highspy.HighsLp()
    sub.num_col_ = len(keep)
    sub.num_row_ = lp.num_row_
    sub.col_cost_ = np.asarray(lp.col_cost_)[keep]
    sub.col_lower_ = np.zeros(len(keep))
    sub.col_upper_ = np.ones(len(keep))
    sub.row_lower_ = np.asarray(lp.row_lower_)
    sub.row_upper_ = np.asarray(lp.row_upper_)
    sub.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    sub.a_matrix_.start_ = np.concatenate([[0], np.cumsum([len(s) for s in spans])]).astype(
        np.int32)
    sub.a_matrix_.index_ = indices[taken].astype(np.int32)
    sub.a_matrix_.value_ = values[taken]
    sub.integrality_ = [highspy.HighsVarType.kInteger] * len(keep)
    return sub


# the first reduced-cost threshold of ``_solve_highs``, relative to the LP bound: large enough
# that one restricted solve is usually final on the benchmark's deep programs
FIRST_GAP = 1e-3


def _run_highs(lp: highspy.HighsLp, deadline: float | None) -> highspy.Highs:
    """One HiGHS solve of ``lp`` (a MIP when it has integrality), exact gaps, one thread."""
    highs = _quiet_highs()
    # restarts, and the feasibility-jump, RINS and RENS heuristics, cost most of the time on
    # these small multiple-choice knapsacks, whose columns all lie near the LP bound (the
    # restricted program of 143 columns: 61 ms with them, 33 ms without; measured with
    # benchmarks/ilp_solve_time.py's 54 x 36 problem); none of them changes the optimum
    for option, value in (("output_flag", False), ("threads", 1), ("mip_rel_gap", 0.0),
                          ("mip_abs_gap", 0.0), ("random_seed", 0),
                          ("mip_allow_restart", False),
                          ("mip_heuristic_run_feasibility_jump", False),
                          ("mip_heuristic_run_rins", False), ("mip_heuristic_run_rens", False)):
        highs.setOptionValue(option, value)
    if deadline is not None:
        highs.setOptionValue("time_limit", max(deadline - time.perf_counter(), 1e-3))
    highs.passModel(lp)
    highs.run()
    return highs


def _solve_highs(model: _IlpModel, time_limit_s: float | None) -> tuple[str, list[float]]:
    """HiGHS in process (Huangfu and Hall 2018), exact, on the columns that can be optimal.

    Reduced-cost fixing (Nemhauser and Wolsey 1988, ch. II.5; Crowder, Johnson and Padberg
    1983) ahead of the branch and bound: with the LP relaxation's optimum ``lb`` and reduced
    costs ``d``, every 0/1 solution that takes column ``j`` costs at least ``lb + d[j]``. So
    the binary program on the columns with ``d[j] <= tau`` is solved; when its optimum ``z``
    satisfies ``z - lb <= tau``, no left-out column can beat it and ``z`` is the optimum of
    the whole program; otherwise ``tau`` grows to ``z - lb`` (the next solve is then final)
    or, when the restricted program is infeasible, fourfold. On the 54-layer x 36-pair
    benchmark this keeps 143 of 1,944 columns and takes a third of the time of handing HiGHS
    the whole program (benchmarks/ilp_solve_time.py), with the same optimum.
    """
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    lp = _highs_matrix(model)
    relaxed = _run_highs(lp, deadline)
    status = relaxed.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:  # an infeasible LP: so is the program
        return relaxed.modelStatusToString(status), []
    lower_bound = relaxed.getInfo().objective_function_value
    reduced = np.asarray(relaxed.getSolution().col_dual)
    # reduced costs come within HiGHS's dual feasibility tolerance (1e-7): columns that far
    # above the threshold are kept too, so that no column with a true d[j] <= tau is left out
    slack = 1e-6 * (1.0 + abs(lower_bound))
    tau = FIRST_GAP * (1.0 + abs(lower_bound))
    while True:
        keep = np.flatnonzero(reduced <= tau + slack)
        highs = _run_highs(_binary_columns(lp, keep), deadline)
        status = highs.getModelStatus()
        whole = len(keep) == len(model.columns)
        if status == highspy.HighsModelStatus.kOptimal:
            best = highs.getInfo().objective_function_value
            if whole or best - lower_bound <= tau:
                values = np.zeros(len(model.columns))
                values[keep] = highs.getSolution().col_value
                return "Optimal", values.tolist()
            tau = best - lower_bound
        elif status == highspy.HighsModelStatus.kInfeasible and not whole:
            tau *= 4
        else:
            return highs.modelStatusToString(status), []


def _solve_cbc(model: _IlpModel, time_limit_s: float | None) -> tuple[str, list[float]]:
    """CBC through PuLP (an MPS file and the ``cbc`` binary): the named alternative."""
    problem = pulp.LpProblem("bit_allocation", pulp.LpMinimize)
    x = [pulp.LpVariable(f"x_{j}", cat="Binary") for j in range(len(model.columns))]
    problem += pulp.lpSum(c * x[j] for j, c in enumerate(model.cost))
    for row, lower, upper in zip(model.rows, model.lower, model.upper, strict=True):
        expression = pulp.lpSum(value * x[j] for j, value in row.items())
        if lower == upper:
            problem += expression == upper
        else:
            problem += expression <= upper
    problem.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, threads=1))
    status = pulp.LpStatus[problem.status]
    if status != "Optimal" or problem.sol_status != pulp.LpSolutionOptimal:
        return f"{status} (solution status {problem.sol_status})", []
    return "Optimal", [v.value() for v in x]


ILP_BACKENDS: dict[str, Callable[[_IlpModel, float | None], tuple[str, list[float]]]] = {
    "ilp": _solve_highs, "ilp-cbc": _solve_cbc}


def _solve_ilp_with(
    backend: str,
    table: pd.DataFrame,
    layers: list[LayerCost],
    budget: Budget,
    fixed: Bits | None = None,
    ties: Iterable[Iterable[str]] = (),
    time_limit_s: float | None = None,
) -> SearchResult:
    fixed = dict(fixed or {})
    choices, searchable, fixed_layers, limits = _prepare(table, layers, budget, fixed)
    start = time.perf_counter()
    model = _ilp_model(choices, searchable, fixed_layers, fixed, limits, ties)
    status, values = ILP_BACKENDS[backend](model, time_limit_s)
    seconds = time.perf_counter() - start
    if status != "Optimal":
        raise MpqbenchError(
            f"the ILP ({backend}) ended with status {status!r}; loosen the budget "
            f"(limits: {budget.describe()}) or check tied layers")
    bits: Bits = dict(fixed)
    scores = {(layer.name, c): s for layer in searchable for c, s in choices[layer.name]}
    objective = 0.0
    for (name, c), value in zip(model.columns, values, strict=True):
        if value > 0.5:
            if name in bits:
                raise MpqbenchError(f"the ILP ({backend}) chose two bit pairs for {name}")
            bits[name] = c
            objective += scores[name, c]
    missed = [layer.name for layer in searchable if layer.name not in bits]
    if missed:
        raise MpqbenchError(f"the ILP ({backend}) chose no bit pair for {missed}")
    totals = {f"{lim.name} ({lim.unit})": lim.total(layers, bits) / lim.scale for lim in limits}
    for lim in limits:  # re-check through cost_summary, not the coefficients used above
        if lim.recount(layers, bits) > lim.bound * (1 + 1e-6):
            raise MpqbenchError(f"the solver's policy breaks the {lim.name} budget")
    return SearchResult(bits, objective, status, seconds, backend, totals)


def solve_ilp(
    table: pd.DataFrame,
    layers: list[LayerCost],
    budget: Budget,
    fixed: Bits | None = None,
    ties: Iterable[Iterable[str]] = (),
    time_limit_s: float | None = None,
) -> SearchResult:
    """Minimize the summed score of one choice per searchable layer under ``budget`` (HiGHS).

    ``table``: a SensitivityTable (columns layer, w_bits, a_bits, score; lower is better)
    covering every layer not in ``fixed``; ``fixed``: ``{layer: (w_bits, a_bits)}`` outside
    the search but inside every limit. Solved in process by HiGHS with both MIP gaps at zero;
    ``seconds`` counts building the model and solving it. Anything but an optimal solve raises.
    """
    return _solve_ilp_with("ilp", table, layers, budget, fixed, ties, time_limit_s)


def solve_ilp_cbc(
    table: pd.DataFrame,
    layers: list[LayerCost],
    budget: Budget,
    fixed: Bits | None = None,
    ties: Iterable[Iterable[str]] = (),
    time_limit_s: float | None = None,
) -> SearchResult:
    """The same ILP as ``solve_ilp``, solved by CBC through PuLP (a subprocess per solve)."""
    return _solve_ilp_with("ilp-cbc", table, layers, budget, fixed, ties, time_limit_s)


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


def _pareto_frontier(options: list[list[tuple[int, float]]], bound: float) -> list[int]:
    """The index of the chosen option of each layer: minimum summed score, summed size <= bound.

    ``options[l]``: (size in weight bits, score) of each choice of layer ``l``. The frontier of
    partial policies holds, for each size, only a policy that scores strictly better than every
    smaller one. Two more prunings keep it short on deep models: a partial policy that cannot
    stay within ``bound`` even with every later layer at its smallest option is dropped, and so
    is one whose score plus the best later scores exceeds a known complete policy (the partial
    policy that completes best with every later layer at its smallest option). Ties on score go
    to the smaller size, then to the lexicographically earlier list of picks.
    """
    count = len(options)
    smallest_size = [min(size for size, _ in layer) for layer in options]
    smallest_score = [min((size, score) for size, score in layer)[1] for layer in options]
    best_score = [min(score for _, score in layer) for layer in options]
    rest_size = np.zeros(count + 1, dtype=np.int64)
    rest_small_score = np.zeros(count + 1)
    rest_best_score = np.zeros(count + 1)
    for i in range(count - 1, -1, -1):
        rest_size[i] = rest_size[i + 1] + smallest_size[i]
        rest_small_score[i] = rest_small_score[i + 1] + smallest_score[i]
        rest_best_score[i] = rest_best_score[i + 1] + best_score[i]
    size = np.zeros(1, dtype=np.int64)
    score = np.zeros(1)
    order = np.zeros(1, dtype=np.int64)  # rank of each partial policy's picks, lexicographic
    parents: list[np.ndarray] = []
    chosen: list[np.ndarray] = []
    for i, layer in enumerate(options):
        sizes = np.array([s for s, _ in layer], dtype=np.int64)
        scores = np.array([s for _, s in layer])
        grown_size = (size[:, None] + sizes[None, :]).ravel()
        grown_score = (score[:, None] + scores[None, :]).ravel()
        parent = np.repeat(np.arange(len(size)), len(layer))
        pick = np.tile(np.arange(len(layer)), len(size))
        keep = grown_size + rest_size[i + 1] <= bound
        incumbent = np.min(np.where(keep, grown_score + rest_small_score[i + 1], np.inf))
        keep &= grown_score + rest_best_score[i + 1] <= incumbent + 1e-9 * (1 + abs(incumbent))
        grown_size, grown_score = grown_size[keep], grown_score[keep]
        parent, pick = parent[keep], pick[keep]
        lexical = order[parent] * len(layer) + pick
        by_size = np.lexsort((lexical, grown_score, grown_size))
        sorted_score = grown_score[by_size]
        better = np.empty(len(by_size), dtype=bool)
        better[:1] = True
        better[1:] = sorted_score[1:] < np.minimum.accumulate(sorted_score)[:-1]
        kept = by_size[better]
        size, score = grown_size[kept], grown_score[kept]
        parents.append(parent[kept])
        chosen.append(pick[kept])
        order = np.argsort(np.argsort(lexical[kept], kind="stable"), kind="stable")
    best = int(np.lexsort((order, size, score))[0])
    picks = []
    for i in range(count - 1, -1, -1):
        picks.append(int(chosen[i][best]))
        best = int(parents[i][best])
    return picks[::-1]


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
    picks = _pareto_frontier(
        [[(layer.params * c[0], s) for c, s in choices[layer.name]] for layer in searchable],
        bound)
    bits: Bits = dict(fixed)
    objective = 0.0
    for layer, j in zip(searchable, picks, strict=True):
        bits[layer.name] = choices[layer.name][j][0]
        objective += choices[layer.name][j][1]
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
    broken = []
    for lim in limits:
        smallest = min(lim.total(layers, uniform_bits(layers, w, a, fixed)) for w, a in choices)
        if smallest > lim.bound * (1 + 1e-9):
            broken.append(lim.infeasible_message(smallest, "for a uniform policy"))
    detail = "; ".join(broken) or "the limits pull towards different choices"
    raise MpqbenchError(f"no uniform choice among {sorted(set(choices))} meets "
                        f"{budget.describe()}: {detail}")


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
SOLVERS.add("ilp-cbc", solve_ilp_cbc)
SOLVERS.add("pareto", solve_pareto)
SOLVERS.add("random", solve_random)
SOLVERS.add("uniform", solve_uniform)


def search(solver: str, table: pd.DataFrame, layers: list[LayerCost], budget: Budget,
           fixed: Bits | None = None, **options) -> SearchResult:
    """Run the solver registered as ``solver`` (ilp, ilp-cbc, pareto, random, uniform).

    ``options``: ``ties`` and ``time_limit_s`` for the ILP, ``seed`` for random.
    """
    return SOLVERS.get(solver)(table, layers, budget, fixed, **options)
