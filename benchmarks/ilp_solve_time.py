"""Solver time: HiGHS in process (``ilp``), CBC through PuLP (``ilp-cbc``) and the Pareto DP.

Prints figures (no assertions) and writes results/benchmarks/ilp_solve_time.json: median wall
seconds over repeats, model building included, on ResNet-20, on a ResNet-18-shaped LIMPQ
problem (25 (w, a) pairs, BitOps W4A4 + size 8x) and on a 54-layer problem, with synthetic
scores; every solver's objective must agree. Published figure to compare: 0.06 s for the LIMPQ
search on ResNet-18 (Tang et al., ECCV 2022).

    python -m benchmarks.ilp_solve_time
"""

from __future__ import annotations

import random
import statistics

import pandas as pd
from torchvision.models import resnet18

from benchmarks.common import write_figures
from mpqbench.cost import Budget, LayerCost, layer_costs
from mpqbench.models import build_model
from mpqbench.search import search

BITS = (2, 3, 4, 5, 6, 8)


def synthetic_table(layers, pairs: bool, seed: int = 0, bits=BITS) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for layer in layers:
        sensitivity = rng.uniform(0.1, 10)
        for w in bits:
            for a in (bits if pairs else (8,)):
                rows.append((layer.name, w, a, sensitivity * (2.0 ** -w + 2.0 ** -a)))
    return pd.DataFrame(rows, columns=["layer", "w_bits", "a_bits", "score"])


def time_solve(solver, layers, table, budget, fixed, repeats: int = 5):
    seconds = []
    for _ in range(repeats):
        result = search(solver, table, layers, budget, fixed)
        seconds.append(result.seconds)
    return statistics.median(seconds), result


def main() -> None:
    resnet20 = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    fixed20 = {"conv1": (8, 8), "linear": (8, 8)}
    rng = random.Random(1)
    big = [LayerCost(f"l{i}", "conv", rng.randint(1_000, 2_400_000), rng.randint(10**5, 10**8))
           for i in range(56)]
    fixed_big = {"l0": (8, 8), "l55": (8, 8)}
    r18 = layer_costs(resnet18(num_classes=1000), (3, 224, 224))
    fixed18 = {r18[0].name: (8, 8), r18[-1].name: (8, 8)}
    cases = [
        ("ResNet-20, 18 searchable x 6 w-bits, size 8x", resnet20, fixed20, False,
         Budget(compression_ratio=8), BITS),
        ("ResNet-18 LIMPQ: 19 searchable x 25 (w,a) pairs, BitOps W4A4 + size 8x", r18, fixed18,
         True, Budget(bitops_equiv=(4, 4), compression_ratio=8), (2, 3, 4, 5, 6)),
        ("54 layers x 6 w-bits, size 8x", big, fixed_big, False, Budget(compression_ratio=8),
         BITS),
        ("54 layers x 36 (w,a) pairs, BitOps W4A4 + size 8x", big, fixed_big, True,
         Budget(bitops_equiv=(4, 4), compression_ratio=8), BITS),
    ]
    rows = []
    print(f"{'problem':72s} {'solver':8s} {'median s':>9s}  objective")
    for name, layers, fixed, pairs, budget, bits in cases:
        table = synthetic_table([ly for ly in layers if ly.name not in fixed], pairs, bits=bits)
        solvers = ["ilp", "ilp-cbc"] + ([] if budget.bitops_equiv else ["pareto"])
        objectives = {}
        for solver in solvers:
            seconds, result = time_solve(solver, layers, table, budget, fixed)
            objectives[solver] = result.objective
            print(f"{name:72s} {solver:8s} {seconds:9.3f}  {result.objective:.6f}")
            rows.append({"problem": name, "solver": solver, "median s": round(seconds, 4),
                         "objective": round(result.objective, 6)})
        spread = max(objectives.values()) - min(objectives.values())
        if spread > 1e-9 * max(abs(v) for v in objectives.values()):
            raise SystemExit(f"{name}: the solvers disagree: {objectives}")
    write_figures("ilp_solve_time", "Bit-allocation solver time", rows, {"repeats": 5},
                  ["Targets (issue 20): the ResNet-18 LIMPQ ILP <= 0.03 s (paper: 0.06 s); "
                   "54 x 36 ILP <= 0.08 s; Pareto DP on 54 layers <= 0.1 s.",
                   "HiGHS runs with both MIP gaps at zero and restarts off; CBC through PuLP "
                   "writes an MPS file and starts a subprocess per solve.",
                   "HiGHS (`ilp`) first solves the LP relaxation and hands branch and bound only "
                   "the columns whose reduced cost lies within a gap threshold of the LP bound "
                   "(reduced-cost fixing; exact: the threshold grows until the restricted "
                   "optimum's gap is within it): 143 of the 54 x 36 problem's 1,944 columns. "
                   "Before that (2026-11-27 profile) HiGHS took 0.169 s on the whole program: "
                   "0.04 s presolve and 0.12 s of branch and bound, half of it in sub-MIP "
                   "heuristics; the feasibility-jump, RINS and RENS heuristics are off (61 -> "
                   "33 ms on the restricted program)."])


if __name__ == "__main__":
    main()
