"""The committed numbers come back from the committed checkpoint and code (issue 15).

Re-runs one cell of the committed `uniform` stage (W4A8, nearest rounding, the quick
profile's PTQ settings and seed) from the pinned checkpoint and compares its test top-1 with
the committed RunRecord. On the machine that made the records it is identical; the tolerance
(PTQ_TOLERANCE, points of top-1) is what docs/pipeline.md states for another CPU.
"""

import json
from pathlib import Path

import pytest

from mpqbench.checkpoints import load_fp_model
from mpqbench.config import load_params
from mpqbench.context import Profile, context_for
from mpqbench.protocols import run_policy, uniform_allocation

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "results/runs/uniform-resnet20/uniform-resnet20-W4A8-nearest.json"
PTQ_TOLERANCE = 0.1  # points of top-1


def test_a_committed_ptq_cell_reproduces_from_the_pinned_checkpoint(cifar_splits):
    committed = json.loads(RECORD.read_text())
    profile = Profile.from_params(load_params(REPO / "params.yaml"),
                                  committed["provenance"]["profile"])
    model, meta = load_fp_model(REPO / "checkpoints/resnet20.pt")
    assert meta["test"]["top1"] == pytest.approx(committed["accuracy"]["fp_top1"])
    ctx = context_for("resnet20", model, cifar_splits, profile)
    assert ctx.evaluate_fp().top1 == pytest.approx(committed["accuracy"]["fp_top1"])
    record = run_policy(ctx, uniform_allocation(ctx, "W4A8"), "ptq-nearest", method="uniform",
                        run_id=committed["run_id"]).record
    assert record.policy == committed["policy"]
    assert abs(record.accuracy["top1"] - committed["accuracy"]["top1"]) <= PTQ_TOLERANCE, (
        record.accuracy["top1"], committed["accuracy"]["top1"])
