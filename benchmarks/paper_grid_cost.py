"""Per-cell cost of the grid's protocols on one device, and the `paper` grid's time from it.

Times the real protocol code at the `paper` profile's settings (params.yaml
``profiles.paper``) on short slices, each at two lengths so that the slope is the cost of one
unit (a QAT step, an AdaRound iteration over every layer) and the intercept the set-up:

- PTQ nearest (``mpqbench.ptq.run_ptq``: calibration and observers), then the test pass;
- PTQ AdaRound at two iteration counts, scaled to ``ptq.adaround_iters``;
- ``qat_lsq`` and ``qat_saq`` (``mpqbench.qat.run_qat``, the grid's SAQ options) at two step
  counts, scaled to the profile's epochs x steps per epoch;
- LIMPQ's indicator training (``mpqbench.limpq.train_indicators``), scaled likewise;
- test evaluation (images per second) of the FP, PTQ and QAT models.

The cell counts are the grid's on `paper`: ``grid.cells`` (budgets, seeds, ``only``, cuts)
through ``mpqbench.grid.cell_plan``, with the budgets each allocator serves read from the
committed allocations (``results/grid/allocations``; made on quick: whether an allocator can
serve a budget does not depend on the profile). The estimate leaves out the allocators' own
costs other than LIMPQ's indicator training (sensitivities, synthetic images, the policy
bank) and the FP fine-tune. Also checks that the device agrees with the CPU: FP and PTQ top-1
on the same test images. Prints figures, asserts nothing.

    python -m benchmarks.paper_grid_cost --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import sync, write_figures
from mpqbench.checkpoints import load_fp_model
from mpqbench.config import load_params, profile_settings
from mpqbench.context import Profile, context_for
from mpqbench.data import load_splits
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.grid import cell_plan, grid_settings
from mpqbench.limpq import indicator_config, train_indicators
from mpqbench.ptq import run_ptq
from mpqbench.qat import run_qat
from mpqbench.runtime import resolve_device, seed_everything
from mpqbench.search import uniform_bits

MODEL = "resnet20"


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``work()`` with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    out = work()
    sync(device)
    return time.perf_counter() - start, out


def per_unit(short: float, long: float, n_short: int, n_long: int) -> tuple[float, float]:
    """(seconds per unit, fixed seconds) from two runs of ``n_short`` and ``n_long`` units."""
    unit = (long - short) / (n_long - n_short)
    return unit, max(short - unit * n_short, 0.0)


def served_cells(settings: dict[str, Any], allocations: Path) -> dict[str, int]:
    """Runs per protocol on this profile: budgets the allocator serves and the profile keeps,
    times the protocol's seeds."""
    grid = grid_settings(settings)
    counts = {}
    for protocol in grid["cells"]:
        runs = 0
        for allocator in grid["allocators"]:
            budgets, seeds, skipped = cell_plan(settings, allocator, protocol)
            path = allocations / f"{allocator}-{MODEL}.json"
            if not path.is_file():
                raise MpqbenchError(f"{path} is missing: run `dvc repro allocate@{allocator}-"
                                    f"{MODEL}` (or pass --allocations FOLDER)")
            doc = json.loads(path.read_text())
            runs += seeds * sum(1 for b in budgets if b not in skipped
                                and doc["budgets"][b]["status"] == "ok")
        counts[protocol] = runs
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", default="paper",
                        help="whose settings are timed and counted (smoke: a check of this "
                             "script)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--val-size", type=int, default=1000,
                        help="images held out of train here (the measured slices are short)")
    parser.add_argument("--train-images", type=int, default=45000,
                        help="train images per epoch on the profile (CIFAR-10: 50,000 less "
                             "the 5,000 validation images)")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--qat-steps", type=int, nargs=2, default=[10, 40])
    parser.add_argument("--adaround-iters", type=int, nargs=2, default=[50, 250])
    parser.add_argument("--allocations", default="results/grid/allocations")
    args = parser.parse_args()
    for name, (short, long) in (("--qat-steps", args.qat_steps),
                                ("--adaround-iters", args.adaround_iters)):
        if not 0 < short < long:
            parser.error(f"{name} takes two lengths, the shorter first (got {short} {long})")
    params = load_params("params.yaml")
    served_cells(profile_settings(args.profile, params),
                 Path(args.allocations))  # the allocations are there, before any compute

    profile = Profile.from_params(params, args.profile)
    settings = profile.settings
    device = resolve_device(args.device)
    seed_everything(profile.seed)
    model, _ = load_fp_model(f"checkpoints/{MODEL}.pt")
    splits = load_splits(profile.dataset, args.data_dir, args.val_size, profile.seed)
    ctx = context_for(MODEL, model, splits, profile, device)
    shape, fixed, eval_batch = splits.input_shape, ctx.fixed, profile.eval.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; {len(splits.train)} train and {len(splits.test)} test images here; "
          f"{profile.name}: {args.train_images} train, {args.test_images} test")

    def eval_rate(m: torch.nn.Module) -> tuple[float, float]:
        evaluate(m, splits.test, eval_batch, device, 2 * eval_batch, desc="warm-up")
        seconds, result = timed(device, lambda: evaluate(m, splits.test, eval_batch, device,
                                                         desc="test"))
        return len(splits.test) / seconds, result.top1

    figures: dict[str, float] = {}
    fp_rate, fp_top1 = eval_rate(ctx.model)
    figures["eval FP, img/s"] = fp_rate

    w4a8 = uniform_bits(ctx.layers, 4, 8, fixed)
    ptq_s, ptq = [timed(device, lambda: run_ptq(ctx.model, w4a8, splits.train, shape, "nearest",
                                                profile.ptq, device, profile.seed))
                  for _ in range(2)][-1]  # the first warms up
    ptq_rate, ptq_top1 = eval_rate(ptq.model)
    figures["eval PTQ W4A8, img/s"] = ptq_rate
    # each measured pair follows an untimed warm-up of the same code (kernels chosen, caches)
    ada = [timed(device, lambda n=n: run_ptq(ctx.model, w4a8, splits.train, shape, "adaround",
                                             replace(profile.ptq, adaround_iters=n), device,
                                             profile.seed))[0]
           for n in (1, *args.adaround_iters)][1:]
    ada_iter, ada_fixed = per_unit(*ada, *args.adaround_iters)

    grid = grid_settings(settings)
    qat_config = profile.qat((grid.get("qat") or {}).get(profile.name), profile.seed)
    w4a4 = uniform_bits(ctx.layers, 4, 4, fixed)
    steps: dict[str, tuple[float, float]] = {}
    trained = None
    for protocol in ("qat_lsq", "qat_saq"):
        options = (grid.get("protocol_options") or {}).get(protocol) or {}
        runs = []
        for n in (2, *args.qat_steps):
            short = replace(qat_config, epochs=1, max_batches_per_epoch=n)
            seconds, trained = timed(device, lambda c=short, o=options, p=protocol: run_qat(
                p, ctx.model, w4a4, splits.train, shape, c, device, o, frozen=fixed))
            runs.append(seconds)
        steps[protocol] = per_unit(*runs[1:], *args.qat_steps)
        if protocol == "qat_lsq":
            qat_rate, qat_top1 = eval_rate(trained.model)
            figures["eval QAT W4A4 (LSQ), img/s"] = qat_rate
    limpq = indicator_config(profile)
    candidates = profile.method_cfg("limpq")["candidates"]
    runs = [timed(device, lambda n=n: train_indicators(
        ctx.model, splits.train, shape, ctx.searchable, candidates,
        replace(limpq, epochs=1, max_batches_per_epoch=n), device))[0]
        for n in (2, *args.qat_steps)][1:]
    steps["limpq indicators"] = per_unit(*runs, *args.qat_steps)

    # the same models on the CPU, on the same test images
    cpu = torch.device("cpu")
    cpu_fp = evaluate(copy.deepcopy(ctx.model).to(cpu), splits.test, eval_batch, cpu).top1
    cpu_ptq = evaluate(copy.deepcopy(ptq.model).to(cpu), splits.test, eval_batch, cpu).top1

    test_s = args.test_images / qat_rate
    ptq_test_s = args.test_images / ptq_rate
    per_cell = {
        "ptq-nearest": ptq_s + ptq_test_s,
        "ptq-adaround": ada_fixed + ada_iter * profile.ptq.adaround_iters + ptq_test_s,
    }
    epoch_steps = qat_config.steps_per_epoch(args.train_images)
    for protocol in ("qat_lsq", "qat_saq"):
        unit, fixed_s = steps[protocol]
        per_cell[protocol] = fixed_s + unit * qat_config.epochs * epoch_steps + test_s
    unit, fixed_s = steps["limpq indicators"]
    limpq_s = fixed_s + unit * limpq.epochs * limpq.steps_per_epoch(args.train_images)
    counts = served_cells(settings, Path(args.allocations))

    rows = [{"figure": "QAT step, qat_lsq (s)", "value": round(steps["qat_lsq"][0], 4)},
            {"figure": "QAT step, qat_saq (s)", "value": round(steps["qat_saq"][0], 4)},
            {"figure": "LIMPQ joint indicator step (s)",
             "value": round(steps["limpq indicators"][0], 4)},
            {"figure": "AdaRound iteration, all layers (s)", "value": round(ada_iter, 4)},
            {"figure": "PTQ nearest, calibration to model (s)", "value": round(ptq_s, 2)}]
    rows += [{"figure": k, "value": round(v)} for k, v in figures.items()]
    total = limpq_s
    print(f"\n{'protocol':14s} {'s / cell':>9s} {'cells':>6s} {'hours':>6s}")
    for protocol, seconds in per_cell.items():
        hours = seconds * counts[protocol] / 3600
        total += seconds * counts[protocol]
        print(f"{protocol:14s} {seconds:9.1f} {counts[protocol]:6d} {hours:6.2f}")
        rows.append({"figure": f"{protocol}: s a cell x {counts[protocol]} cells (h)",
                     "value": f"{seconds:.1f} s x {counts[protocol]} = {hours:.2f} h"})
    rows.append({"figure": f"LIMPQ indicator training, {limpq.epochs} epochs (s)",
                 "value": round(limpq_s, 1)})
    rows.append({"figure": f"{profile.name} grid on this device (h)",
                 "value": round(total / 3600, 2)})
    rows.append({"figure": "top-1 on this device / on the CPU, FP",
                 "value": f"{fp_top1:.2f} / {cpu_fp:.2f}"})
    rows.append({"figure": "top-1 on this device / on the CPU, PTQ W4A8 nearest",
                 "value": f"{ptq_top1:.2f} / {cpu_ptq:.2f}"})
    print(f"LIMPQ indicator training {limpq_s:.0f} s; {profile.name} grid "
          f"{total / 3600:.2f} h on {name}")
    print(f"top-1 FP {fp_top1:.2f} here vs {cpu_fp:.2f} on the CPU; PTQ W4A8 {ptq_top1:.2f} vs "
          f"{cpu_ptq:.2f}; QAT W4A4 after {args.qat_steps[1]} steps {qat_top1:.2f}")
    slug = "cpu" if device.type == "cpu" else device.type
    write_figures(f"{profile.name}_grid_cost_{slug}", f"Grid cost of the {profile.name} "
                  f"profile on {name}", rows,
                  {"device": name, "profile": profile.name, "model": MODEL,
                   "train / test images measured on": [len(splits.train), len(splits.test)],
                   "train / test images of the profile": [args.train_images, args.test_images],
                   "QAT steps (two runs)": args.qat_steps,
                   "AdaRound iterations (two runs)": args.adaround_iters,
                   "QAT schedule": f"{qat_config.epochs} epochs x {epoch_steps} steps, batch "
                                   f"{qat_config.batch_size}",
                   "cuDNN TF32": (torch.backends.cudnn.allow_tf32 if device.type == "cuda"
                                  else None)},
                  ["Per-unit costs are the slope between two run lengths, each pair after an "
                   "untimed warm-up run; a cell adds the intercept (set-up, LSQ init) and the "
                   "test pass at the measured rate.",
                   "Cells: grid.cells on the profile, with the budgets each allocator serves read "
                   "from results/grid/allocations (made on quick).",
                   "Left out: the allocators' costs other than LIMPQ's indicator training, "
                   "the FP fine-tune and validation passes."])


if __name__ == "__main__":
    try:
        main()
    except MpqbenchError as exc:
        sys.exit(f"mpqbench: error: {exc}")
