"""ILP solve time on ResNet-20 and on a ResNet-50-sized problem, synthetic scores.

Prints figures (no assertions): median wall seconds of `solve_ilp` over repeats, including
PuLP's model building and the CBC subprocess, and of the Pareto DP where the budget is a size
alone. Published figure to compare: 0.06 s for the LIMPQ search on ResNet-18 (Tang et al.,
ECCV 2022).

    python benchmarks/ilp_solve_time.py
"""

from __future__ import annotations

import random
import statistics

import pandas as pd

from mpqbench.cost import Budget, LayerCost, layer_costs
from mpqbench.models import build_model
from mpqbench.search import search

BITS = (2, 3, 4, 5, 6, 8)


def synthetic_table(layers, pairs: bool, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for layer in layers:
        sensitivity = rng.uniform(0.1, 10)
        for w in BITS:
            for a in (BITS if pairs else (8,)):
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
    cases = [
        ("ResNet-20, 19 searchable x 6 w-bits, size 8x", resnet20, {"conv1": (8, 8)}, False,
         Budget(compression_ratio=8)),
        ("ResNet-20, 18 searchable x 6 w-bits, size 8x", resnet20, fixed20, False,
         Budget(compression_ratio=8)),
        ("54 layers x 6 w-bits, size 8x", big, fixed_big, False, Budget(compression_ratio=8)),
        ("54 layers x 36 (w,a) pairs, BitOps W4A4 + size 8x", big, fixed_big, True,
         Budget(bitops_equiv=(4, 4), compression_ratio=8)),
    ]
    print(f"{'problem':55s} {'solver':7s} {'median s':>9s}  status     objective")
    for name, layers, fixed, pairs, budget in cases:
        table = synthetic_table([ly for ly in layers if ly.name not in fixed], pairs)
        solvers = ["ilp"] if budget.bitops_equiv else ["ilp", "pareto"]
        for solver in solvers:
            seconds, result = time_solve(solver, layers, table, budget, fixed)
            print(f"{name:55s} {solver:7s} {seconds:9.3f}  {result.status:10s} "
                  f"{result.objective:.6f}")


if __name__ == "__main__":
    main()
