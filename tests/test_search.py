import itertools
import random

import pandas as pd
import pytest

from mpqbench import search as search_module
from mpqbench.config import load_yaml
from mpqbench.cost import Budget, LayerCost, cost_summary, layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.models import build_model
from mpqbench.search import (
    best_uniform,
    random_bits,
    search,
    solve_ilp,
    solve_pareto,
    uniform_bits,
)

CHOICE_SETS = [
    [(2, 8), (4, 8), (6, 8), (8, 8)],  # weight bits alone
    [(2, 2), (4, 4), (4, 8), (8, 8)],  # (weight, activation) pairs
]


def _instance(rng: random.Random, n_layers: int, choices):
    layers = [LayerCost(f"l{i}", "conv", rng.randint(10, 5000), rng.randint(100, 90000))
              for i in range(n_layers)]
    rows = []
    for layer in layers:
        base = rng.uniform(0.1, 5.0)
        for w, a in choices:  # more bits, lower score, plus noise: random but realistic
            rows.append((layer.name, w, a, base / (w * a) + rng.uniform(0, 0.05)))
    return layers, pd.DataFrame(rows, columns=["layer", "w_bits", "a_bits", "score"])


def _brute_force(layers, table, budget, fixed):
    per_layer = {name: list(group[["w_bits", "a_bits", "score"]].itertuples(index=False))
                 for name, group in table.groupby("layer")}
    searchable = [layer for layer in layers if layer.name not in fixed]
    limits = budget.limits(layers, fixed)
    best = None
    for combo in itertools.product(*(per_layer[layer.name] for layer in searchable)):
        bits = dict(fixed)
        bits.update({layer.name: (int(c.w_bits), int(c.a_bits))
                     for layer, c in zip(searchable, combo, strict=True)})
        # feasibility through cost_summary, a code path the solver's constraints do not use
        if all(lim.recount(layers, bits) <= lim.bound * (1 + 1e-9) for lim in limits):
            score = sum(c.score for c in combo)
            if best is None or score < best[0]:
                best = (score, bits)
    return best


def _random_budget(rng: random.Random, layers, fixed):
    kind = rng.choice(["size", "ratio", "bitops", "equiv", "mean", "size+bitops"])
    lo = cost_summary(layers, {**uniform_bits(layers, 2, 2), **fixed})
    hi = cost_summary(layers, {**uniform_bits(layers, 8, 8), **fixed})
    t = rng.uniform(0.15, 0.85)
    size = lo["size_mib"] + t * (hi["size_mib"] - lo["size_mib"])
    bitops = lo["bitops_g"] + rng.uniform(0.15, 0.85) * (hi["bitops_g"] - lo["bitops_g"])
    return {
        "size": Budget(size_mib=size),
        "ratio": Budget(compression_ratio=32 / (2 + t * 6)),
        "bitops": Budget(bitops_g=bitops),
        "equiv": Budget(bitops_equiv=(4, 4)),
        "mean": Budget(mean_w_bits=2 + t * 6),
        "size+bitops": Budget(size_mib=size, bitops_g=bitops),
    }[kind]


@pytest.mark.parametrize("solver", ["ilp", "ilp-cbc"])
def test_ilp_matches_brute_force_on_60_random_instances(solver):
    rng = random.Random(0)
    checked = 0
    for trial in range(60):
        choices = CHOICE_SETS[trial % 2]
        layers, table = _instance(rng, rng.randint(3, 6), choices)
        fixed = {layers[0].name: (8, 8)} if trial % 3 == 0 else {}
        table = table[~table.layer.isin(fixed)]
        budget = _random_budget(rng, layers, fixed)
        expected = _brute_force(layers, table, budget, fixed)
        if expected is None:
            with pytest.raises(MpqbenchError, match="infeasible|status"):
                search(solver, table, layers, budget, fixed)
            continue
        result = search(solver, table, layers, budget, fixed)
        assert result.status == "Optimal" and result.solver == solver
        assert result.objective == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
        assert result.bits == expected[1]
        checked += 1
    assert checked >= 50


def test_the_reduced_cost_restriction_stays_exact_when_its_first_threshold_misses(monkeypatch):
    """With a first threshold of 1e-12 the restricted programs of ``ilp`` are often infeasible
    or miss the optimum; growing the threshold until the gap test passes must still give the
    brute-force optimum on every instance."""
    monkeypatch.setattr(search_module, "FIRST_GAP", 1e-12)
    statuses: list[str] = []
    run = search_module._run_highs

    def spy(lp, deadline):
        highs = run(lp, deadline)
        if len(lp.integrality_):
            statuses.append(highs.modelStatusToString(highs.getModelStatus()))
        return highs

    monkeypatch.setattr(search_module, "_run_highs", spy)
    rng = random.Random(0)
    regrown = 0
    for trial in range(60):
        layers, table = _instance(rng, rng.randint(3, 6), CHOICE_SETS[trial % 2])
        budget = _random_budget(rng, layers, {})
        expected = _brute_force(layers, table, budget, {})
        if expected is None:
            continue
        statuses.clear()
        result = search("ilp", table, layers, budget)
        assert result.objective == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
        assert result.bits == expected[1]
        regrown += len(statuses) > 1
    assert regrown >= 20  # the threshold grew (to the gap of a restricted optimum) that often


def test_the_reduced_cost_restriction_grows_past_an_infeasible_restricted_program(monkeypatch):
    """One layer, three choices: (8, 2) breaks the size limit, (4, 8) the BitOps limit, and
    the LP mixes them half and half at score 0; (4, 4) at score 1 is the only feasible choice
    (a hand count), so the first restricted program, without it, is infeasible."""
    statuses: list[str] = []
    run = search_module._run_highs

    def spy(lp, deadline):
        highs = run(lp, deadline)
        if len(lp.integrality_):
            statuses.append(highs.modelStatusToString(highs.getModelStatus()))
        return highs

    monkeypatch.setattr(search_module, "_run_highs", spy)
    layers = [LayerCost("only", "conv", 2**20, 62_500_000)]
    table = pd.DataFrame([("only", 8, 2, 0.0), ("only", 4, 8, 0.0), ("only", 4, 4, 1.0)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    wide, deep = (cost_summary(layers, {"only": c}) for c in ((8, 2), (4, 8)))
    budget = Budget(size_mib=(wide["size_mib"] + deep["size_mib"]) / 2,
                    bitops_g=(wide["bitops_g"] + deep["bitops_g"]) / 2)
    result = search("ilp", table, layers, budget)
    assert result.bits == {"only": (4, 4)} and result.objective == 1.0
    assert statuses[0] == "Infeasible" and statuses[-1] == "Optimal"


def test_highs_cbc_and_the_pareto_dp_find_the_same_optimum_on_deep_instances():
    """Too large for brute force: the three exact solvers must agree with each other."""
    rng = random.Random(7)
    for trial in range(12):
        pairs = trial % 2 == 1
        choices = ([(w, a) for w in (2, 3, 4, 6, 8) for a in (2, 4, 8)] if pairs
                   else [(w, 8) for w in (2, 3, 4, 5, 6, 8)])
        layers, table = _instance(rng, rng.randint(20, 54), choices)
        fixed = {layers[0].name: (8, 8), layers[-1].name: (8, 8)}
        table = table[~table.layer.isin(fixed)]
        budget = (Budget(bitops_equiv=(4, 4), compression_ratio=rng.uniform(5, 9)) if pairs
                  else Budget(compression_ratio=rng.uniform(5, 12)))
        highs = search("ilp", table, layers, budget, fixed)
        cbc = search("ilp-cbc", table, layers, budget, fixed)
        assert highs.objective == pytest.approx(cbc.objective, rel=1e-9)
        if not pairs:
            dp = search("pareto", table, layers, budget, fixed)
            assert dp.objective == pytest.approx(highs.objective, rel=1e-9)


def test_a_tighter_budget_never_raises_total_bits():
    rng = random.Random(1)
    layers, table = _instance(rng, 6, CHOICE_SETS[0])
    sizes = []
    for ratio in (4, 5, 6, 8, 10, 12, 14, 16):
        bits = solve_ilp(table, layers, Budget(compression_ratio=ratio)).bits
        sizes.append(cost_summary(layers, bits)["size_mib"])
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > sizes[-1]


def test_infeasible_budget_states_the_smallest_feasible_value():
    layers = [LayerCost("a", "conv", 1000, 10), LayerCost("b", "conv", 3000, 10)]
    table = pd.DataFrame([(n, w, 8, 1.0 / w) for n in "ab" for w in (2, 4, 8)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    smallest = 4000 * 2 / 8 / 2**20
    with pytest.raises(MpqbenchError, match=f"smallest feasible value is {smallest:.6g} MiB"):
        solve_ilp(table, layers, Budget(size_mib=smallest * 0.9))
    result = solve_ilp(table, layers, Budget(size_mib=smallest))
    assert result.bits == {"a": (2, 8), "b": (2, 8)}


def test_tied_layers_take_the_same_choice():
    layers = [LayerCost("a", "conv", 100, 10), LayerCost("b", "conv", 100, 10)]
    # alone, "a" would take 8 bits and "b" 2 bits; tied, both must match
    table = pd.DataFrame([("a", 2, 8, 10.0), ("a", 8, 8, 0.0), ("b", 2, 8, 0.0),
                          ("b", 8, 8, 1.0)], columns=["layer", "w_bits", "a_bits", "score"])
    free = solve_ilp(table, layers, Budget(mean_w_bits=8))
    assert free.bits == {"a": (8, 8), "b": (2, 8)}
    tied = solve_ilp(table, layers, Budget(mean_w_bits=8), ties=[["a", "b"]])
    assert tied.bits == {"a": (8, 8), "b": (8, 8)} and tied.objective == 1.0


def test_bad_tables_and_unknown_layers_are_refused():
    layers = [LayerCost("a", "conv", 100, 10)]
    with pytest.raises(MpqbenchError, match="lacks columns"):
        solve_ilp(pd.DataFrame({"layer": ["a"]}), layers, Budget(mean_w_bits=4))
    table = pd.DataFrame([("zz", 4, 8, 1.0)], columns=["layer", "w_bits", "a_bits", "score"])
    with pytest.raises(MpqbenchError, match=r"\['zz'\] are not quantizable layers"):
        solve_ilp(table, layers, Budget(mean_w_bits=4))
    with pytest.raises(MpqbenchError, match="unknown budget keys"):
        Budget.from_dict({"size": 1})
    assert Budget.from_dict({"bitops_equiv": "W3A3"}).bitops_equiv == (3, 3)
    assert Budget.from_dict({"bitops_equiv": [4, 2]}).bitops_equiv == (4, 2)
    with pytest.raises(MpqbenchError, match="ratio must be a finite positive number, got .8x."):
        Budget.from_dict({"compression_ratio": "8x"})
    with pytest.raises(MpqbenchError, match="'4bit' must look like 'W4A4'"):
        Budget.from_dict({"bitops_equiv": "4bit"})


def test_mean_bits_limit_recounts_to_the_same_total():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    bits = {layer.name: (2 + i % 5, 8) for i, layer in enumerate(layers)}
    for budget in (Budget(size_mib=1), Budget(bitops_g=1), Budget(mean_w_bits=4)):
        (limit,) = budget.limits(layers)
        assert limit.recount(layers, bits) == pytest.approx(limit.total(layers, bits))


def test_resnet20_budget_conventions_with_fixed_first_and_last_layers():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = {"conv1": (8, 8), "linear": (8, 8)}
    table = pd.DataFrame([(layer.name, w, 8, 1.0 / w) for layer in layers[1:-1]
                          for w in (2, 3, 4, 5, 6, 8)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    result = solve_ilp(table, layers, Budget(compression_ratio=8), fixed)
    summary = cost_summary(layers, result.bits)
    assert summary["compression_ratio"] >= 8 - 1e-9
    assert result.bits["conv1"] == (8, 8) and result.bits["linear"] == (8, 8)
    # W4A4-equivalent BitOps: searchable layers at 4x4, the fixed ones at 8x8
    (limit,) = Budget(bitops_equiv=(4, 4)).limits(layers, fixed)
    expected = (layers[0].macs + layers[-1].macs) * 64 + sum(ly.macs for ly in layers[1:-1]) * 16
    assert limit.bound == expected


def test_pareto_dp_matches_brute_force_on_size_budgets():
    rng = random.Random(2)
    checked = 0
    for trial in range(40):
        layers, table = _instance(rng, rng.randint(2, 6), CHOICE_SETS[trial % 2])
        fixed = {layers[-1].name: (8, 8)} if trial % 2 else {}
        table = table[~table.layer.isin(fixed)]
        t = rng.uniform(0.1, 0.9)
        budget = [Budget(mean_w_bits=2 + 6 * t), Budget(compression_ratio=32 / (2 + 6 * t)),
                  Budget(size_mib=cost_summary(layers, uniform_bits(layers, 5, 8))["size_mib"]
                         * (0.5 + t))][trial % 3]
        expected = _brute_force(layers, table, budget, fixed)
        if expected is None:
            with pytest.raises(MpqbenchError, match="infeasible"):
                solve_pareto(table, layers, budget, fixed)
            continue
        result = solve_pareto(table, layers, budget, fixed)
        assert result.objective == pytest.approx(expected[0], rel=1e-9, abs=1e-12)
        assert cost_summary(layers, result.bits)["size_mib"] <= budget.limits(
            layers, fixed)[0].bound / 8 / 2**20 * (1 + 1e-9)
        checked += 1
    assert checked >= 30


def test_pareto_dp_and_ilp_agree_on_resnet20():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = {"conv1": (8, 8), "linear": (8, 8)}
    rng = random.Random(3)
    table = pd.DataFrame([(layer.name, w, 8, rng.uniform(0.5, 2) * 4.0 ** -w)
                          for layer in layers[1:-1] for w in (2, 3, 4, 5, 6, 8)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    for ratio in (6, 8, 10, 12):
        ilp = solve_ilp(table, layers, Budget(compression_ratio=ratio), fixed)
        dp = search("pareto", table, layers, Budget(compression_ratio=ratio), fixed)
        assert dp.objective == pytest.approx(ilp.objective, rel=1e-9)
        assert dp.solver == "pareto-dp" and dp.bits["conv1"] == (8, 8)
    with pytest.raises(MpqbenchError, match="size budgets only"):
        solve_pareto(table, layers, Budget(bitops_equiv=(4, 8)), fixed)


def test_random_policies_meet_the_budget_and_repeat_with_the_seed():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = {"conv1": (8, 8), "linear": (8, 8)}
    choices = [(w, a) for w in (2, 4, 8) for a in (4, 8)]
    budget = Budget(compression_ratio=8, bitops_equiv=(4, 8))
    limits = budget.limits(layers, fixed)
    seen = set()
    for seed in range(20):
        bits = random_bits(choices, layers, budget, fixed, seed)
        assert all(lim.recount(layers, bits) <= lim.bound * (1 + 1e-9) for lim in limits)
        assert bits == random_bits(choices, layers, budget, fixed, seed)
        assert bits["linear"] == (8, 8) and set(bits) == {layer.name for layer in layers}
        seen.add(tuple(sorted(bits.items())))
    assert len(seen) == 20
    with pytest.raises(MpqbenchError, match="infeasible"):
        random_bits(choices, layers, Budget(compression_ratio=100), fixed)


def test_best_uniform_takes_the_highest_choice_that_fits():
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = {"conv1": (8, 8), "linear": (8, 8)}
    choices = [(w, 8) for w in (2, 3, 4, 5, 6, 8)]
    bits = best_uniform(choices, layers, Budget(compression_ratio=8), fixed)
    # 4-bit everywhere but two 8-bit layers is under 8x; 3-bit is the highest that fits
    assert bits["layer1.0.conv1"] == (3, 8)
    assert cost_summary(layers, bits)["compression_ratio"] >= 8
    assert cost_summary(layers, uniform_bits(layers, 4, 8, fixed))["compression_ratio"] < 8
    with pytest.raises(MpqbenchError, match="no uniform choice"):
        best_uniform(choices, layers, Budget(compression_ratio=30), fixed)
    with pytest.raises(MpqbenchError, match="unknown solver 'greedy'; known: ilp, ilp-cbc, pareto"):
        search("greedy", pd.DataFrame(), layers, Budget(mean_w_bits=4))


def test_pareto_refuses_layers_the_model_does_not_have():
    layers = [LayerCost("a", "conv", 100, 10)]
    table = pd.DataFrame([("zz", 4, 8, 1.0)], columns=["layer", "w_bits", "a_bits", "score"])
    with pytest.raises(MpqbenchError, match=r"\['zz'\] are not quantizable layers"):
        solve_pareto(table, layers, Budget(mean_w_bits=4))


@pytest.mark.parametrize("spec, message", [
    ({"compression_ratio": float("nan")}, "compression_ratio must be a finite positive number"),
    ({"size_mib": float("inf")}, "size_mib must be a finite positive number, got inf"),
    ({"bitops_g": -1.0}, "bitops_g must be a finite positive number, got -1.0"),
    ({"mean_w_bits": True}, "mean_w_bits must be a finite positive number, got True"),
    ({}, "a budget needs at least one limit"),
    ({"compression_ratio": None}, "a budget needs at least one limit"),
    ({"bitops_equiv": "W0A4"}, "bitops_equiv must be a .w_bits, a_bits. pair of positive"),
])
def test_budgets_check_themselves_when_built(spec, message):
    with pytest.raises(MpqbenchError, match=message):
        Budget.from_dict(spec)
    if "bitops_equiv" not in spec:  # built in code, the same check
        with pytest.raises(MpqbenchError, match=message):
            Budget(**spec)


def test_budget_numbers_in_any_notation_are_numbers():
    text = "b: {size_mib: 1e-1, compression_ratio: 8, bitops_g: 2.5E+0, mean_w_bits: 4.5e0}"
    spec = load_yaml(text)["b"]
    assert spec == {"size_mib": 0.1, "compression_ratio": 8, "bitops_g": 2.5, "mean_w_bits": 4.5}
    assert Budget.from_dict(spec).size_mib == 0.1
    assert Budget.from_dict({"size_mib": "1e-1"}).size_mib == 0.1


@pytest.mark.parametrize("solver", ["ilp", "ilp-cbc", "pareto", "random", "uniform"])
def test_an_infeasible_ratio_is_reported_as_a_ratio_with_the_largest_reachable(solver):
    layers = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed = {"conv1": (8, 8), "linear": (8, 8)}
    table = pd.DataFrame([(layer.name, w, 8, 1.0 / w) for layer in layers[1:-1]
                          for w in (2, 4, 8)], columns=["layer", "w_bits", "a_bits", "score"])
    # hand count: every searchable layer at 2 bits, the fixed ones at 8
    bits = sum(ly.params * (8 if ly.name in fixed else 2) for ly in layers)
    largest = 32 * sum(ly.params for ly in layers) / bits
    with pytest.raises(MpqbenchError, match=(
            rf"budget compression_ratio 30x is infeasible: the largest feasible value is "
            rf"{largest:.6g}x")):
        search(solver, table, layers, Budget(compression_ratio=30), fixed)
    smallest_mib = bits / 8 / 2**20
    with pytest.raises(MpqbenchError, match=rf"smallest feasible value is {smallest_mib:.6g} MiB"):
        search(solver, table, layers, Budget(size_mib=smallest_mib * 0.9), fixed)
