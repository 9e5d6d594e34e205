"""How long QAT must run on the quick profile: uniform W4A4 qat_lsq against schedule length.

    python -m benchmarks.qat_length                 # 1 and 2 epochs of 352 steps
    python -m benchmarks.qat_length --epochs 1 2 3

The comparison grid (issue 16) asks QAT on quick to be long enough that uniform W4A4 qat_lsq
comes within 2 points of the FP model; this measures the gap and the wall time of each
length, through the same path every run takes (``protocols.run_policy``, the profile's QAT
settings with ``epochs`` and full epochs of the train split), one seed (the profile's). Saved
as ``results/benchmarks/qat_length.json``.
"""

from __future__ import annotations

import argparse

from benchmarks.common import write_figures
from mpqbench.context import build_context
from mpqbench.protocols import run_policy, uniform_allocation

BAR = 2.0  # points below FP that the grid's QAT must reach on quick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--config", default="W4A4")
    args = parser.parse_args()
    ctx = build_context("resnet20", "quick")
    rows = []
    for epochs in args.epochs:
        schedule = ctx.profile.qat({"epochs": epochs, "max_batches_per_epoch": None})
        outcome = run_policy(ctx, uniform_allocation(ctx, args.config), "qat_lsq",
                             method="benchmark", run_id=f"qat_length-{epochs}", qat=schedule,
                             resume_dir=None)
        record = outcome.record
        steps = len(outcome.output.result.history["steps"])
        rows.append({"config": args.config, "epochs": epochs, "steps": steps,
                     "top1": round(record.accuracy["top1"], 2),
                     "below_fp": round(record.accuracy["drop"], 2),
                     "within_bar": record.accuracy["drop"] <= BAR,
                     "train_s": round(record.timing["protocol_s"], 1),
                     "s_per_step": round(record.timing["train_s_per_step"], 3)})
        print(rows[-1])
    write_figures("qat_length", f"QAT length on quick: uniform {args.config} qat_lsq against "
                  "epochs of the train split", rows,
                  {"fp_top1": round(ctx.fp_top1, 2), "bar_points_below_fp": BAR,
                   "images_per_epoch": len(ctx.splits.train), "seed": ctx.seed},
                  ["one seed; the quick profile's QAT settings (lr, cosine schedule, weight "
                   "decay) with full epochs"])


if __name__ == "__main__":
    main()
