"""Cost of one training step of each QAT recipe, relative to a plain LSQ QAT step.

Measured side by side in one run, on ResNet-20 with CIFAR-10 batches of 128 (W4A4, first conv
and classifier W8A8): plain QAT (`qat_lsq`), SAQ cases 1, 2 and 3, SAQ with a fresh
perturbation every 2 and every 4 steps, and LIMPQ's joint indicator step (5 widths + 1 mixed
setting). Also LIMPQ's search time: the ILP over 25 (w, a) pairs on ResNet-20 and on a
ResNet-18-shaped problem (torchvision's layer shapes at 224x224), against the paper's 0.06 s.
Prints figures, asserts nothing.

    python -m benchmarks.qat_step_cost
"""

from __future__ import annotations

import copy
import random
import statistics
import time

import pandas as pd
import torch
import torch.nn as nn

from benchmarks.common import resnet20_and_cifar, write_figures
from mpqbench.cost import Budget, layer_costs
from mpqbench.limpq import indicator_table
from mpqbench.qat import qat_model
from mpqbench.quant.multibit import multibit_model
from mpqbench.quant.policy import default_fixed
from mpqbench.search import search, uniform_bits
from mpqbench.train import JointIndicatorStep, PlainStep, SaqStep, qat_parameter_groups


class FpStep:
    """A plain FP training step (the reference the QAT step is compared with)."""

    def setup(self, model: nn.Module, forward: nn.Module | None = None) -> None:
        pass

    def __call__(self, model, x, y, optimizer, criterion, clip=None):
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

CANDIDATES = [2, 3, 4, 5, 6]


ROUNDS = 5  # alternating measurements of the FP and plain QAT steps


def seconds_per_step(model: nn.Module, step, batches, warmup: int = 2) -> float:
    model.train()
    step.setup(model)
    opt = torch.optim.SGD(qat_parameter_groups(model, 1e-4), lr=0.01, momentum=0.9,
                          nesterov=True)
    criterion = nn.CrossEntropyLoss()
    times = []
    for i, (x, y) in enumerate(batches):
        start = time.perf_counter()
        step(model, x, y, opt, criterion)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.mean(times)


def synthetic_indicators(layers, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for layer in layers:
        for kind in ("weight", "activation"):
            top = rng.uniform(0.01, 0.1)
            rows += [{"layer": layer.name, "kind": kind, "bits": b,
                      "indicator": top * 2 ** (6 - b) * rng.uniform(0.9, 1.1)}
                     for b in CANDIDATES]
    return pd.DataFrame(rows)


def search_seconds(layers, repeats: int = 5) -> tuple[float, int]:
    fixed = default_fixed(layers)
    table = indicator_table(synthetic_indicators([ly for ly in layers if ly.name not in fixed]))
    budget = Budget(bitops_equiv=(4, 4), compression_ratio=8)
    times = [search("ilp", table.frame, layers, budget, fixed).seconds for _ in range(repeats)]
    return statistics.median(times), len(layers) - len(fixed)


def main() -> None:
    torch.manual_seed(0)
    model, splits, source = resnet20_and_cifar()
    layers = layer_costs(model, splits.input_shape)
    fixed = default_fixed(layers)
    searchable = [ly.name for ly in layers if ly.name not in fixed]
    bits = uniform_bits(layers, 4, 4, fixed)
    batches = list(zip(range(8), splits.train.batches(128, shuffle=True, augment=True),
                       strict=False))
    batches = [b for _, b in batches]
    print(f"ResNet-20 ({source}), batch 128, {len(batches) - 2} timed steps after 2 warm-up, "
          f"{torch.get_num_threads()} threads")
    recipes = [
        ("FP training step", lambda: copy.deepcopy(model), FpStep),
        ("plain QAT (qat_lsq)", lambda: qat_model(model, bits, splits.input_shape), PlainStep),
        ("SAQ case 1", lambda: qat_model(model, bits, splits.input_shape),
         lambda: SaqStep(0.4, case=1)),
        ("SAQ case 2", lambda: qat_model(model, bits, splits.input_shape),
         lambda: SaqStep(0.4, case=2)),
        ("SAQ case 3", lambda: qat_model(model, bits, splits.input_shape),
         lambda: SaqStep(0.4, case=3)),
        ("SAQ case 3, every 2", lambda: qat_model(model, bits, splits.input_shape),
         lambda: SaqStep(0.4, case=3, every=2)),
        ("SAQ case 3, every 4", lambda: qat_model(model, bits, splits.input_shape),
         lambda: SaqStep(0.4, case=3, every=4)),
        ("LIMPQ joint step (|B|=5)",
         lambda: multibit_model(model, splits.input_shape, searchable, CANDIDATES),
         lambda: JointIndicatorStep(searchable, CANDIDATES)),
    ]
    # the target's two recipes alternate ROUNDS times (median), so that a drift of the machine
    # hits both alike; the others run once
    measured = {}
    for _ in range(ROUNDS):
        for name, make_model, make_step in recipes[:2]:
            measured.setdefault(name, []).append(
                seconds_per_step(make_model(), make_step(), batches))
    measured = {name: statistics.median(times) for name, times in measured.items()}
    for name, make_model, make_step in recipes[2:]:
        measured[name] = seconds_per_step(make_model(), make_step(), batches)
    fp, plain = measured["FP training step"], measured["plain QAT (qat_lsq)"]
    print(f"{'recipe':28s} {'s / step':>9s} {'x plain':>8s} {'x FP':>6s}")
    rows = []
    for name, seconds in measured.items():
        print(f"{name:28s} {seconds:9.3f} {seconds / plain:8.2f} {seconds / fp:6.2f}")
        rows.append({"recipe": name, "s / step": round(seconds, 3),
                     "x plain QAT": round(seconds / plain, 2), "x FP step": round(seconds / fp, 2)})

    from torchvision.models import resnet18

    r18 = layer_costs(resnet18(num_classes=1000), (3, 224, 224))
    print("\nLIMPQ search: ILP over 25 (w, a) pairs, BitOps W4A4 + size 8x, median of 5")
    for name, ly in (("ResNet-20", layers), ("ResNet-18 (224x224)", r18)):
        seconds, n = search_seconds(ly)
        print(f"{name:22s} {n:3d} searchable layers: {seconds:.3f} s (paper, ResNet-18: 0.06 s)")
        rows.append({"recipe": f"LIMPQ search, {name} ({n} layers x 25 pairs), HiGHS",
                     "s / step": round(seconds, 3), "x plain QAT": "", "x FP step": ""})
    write_figures("qat_step_cost", "QAT step cost, ResNet-20 W4A4, batch 128", rows,
                  {"timed steps": len(batches) - 2, "warm-up steps": 2, "checkpoint": source,
                   "FP and plain QAT: median of alternating rounds": ROUNDS},
                  ["Target (issue 20): plain QAT step / FP step <= 1.2.",
                   "The LIMPQ search rows are seconds per solve (median of 5), not per step; "
                   "the paper reports 0.06 s on ResNet-18.",
                   "Where plain QAT's extra time goes (torch profiler, 4 steps, 2026-11-27): "
                   "about 67 ms a step in the LSQ function's elementwise passes over the "
                   "activations (mul 29, addcmul 13, eq 8, clamp 7, div 7), and about 25 ms "
                   "more in the FP model's own convolution and batch-norm kernels beside "
                   "them; the mixed memory layouts (mkldnn hands back channels-last "
                   "gradients) cost more than a layout change saves.",
                   "Since mpqbench.malloc keeps glibc from giving freed blocks back to the OS "
                   "(and page-faulting them in again): before it, FP step 0.301 s and plain "
                   "QAT 0.388 s (1.29 x FP); with it, three single-measurement runs on "
                   "2026-11-27 gave 1.18, 1.20 and 1.32 x FP (FP 0.245 to 0.274 s), so the "
                   "FP and plain QAT steps now alternate in rounds (median); SAQ case 3 took "
                   "0.61 to 0.75 s (0.75 before); the LIMPQ joint step stayed near 2 s. The "
                   "LIMPQ search rows use reduced-cost fixing ahead of HiGHS "
                   "(mpqbench.search): 0.084 and 0.059 s before, 0.029 to 0.044 and 0.026 to "
                   "0.038 s in those runs."])


if __name__ == "__main__":
    main()
