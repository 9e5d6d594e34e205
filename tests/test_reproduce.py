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
from mpqbench.config import load_params, profile_settings
from mpqbench.uniform import uniform_ptq_run

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "results/runs/uniform-resnet20/uniform-resnet20-W4A8-nearest.json"
PTQ_TOLERANCE = 0.1  # points of top-1


def test_a_committed_ptq_cell_reproduces_from_the_pinned_checkpoint(cifar_splits):
    committed = json.loads(RECORD.read_text())
    settings = profile_settings(committed["provenance"]["profile"],
                                load_params(REPO / "params.yaml"))
    model, meta = load_fp_model(REPO / "checkpoints/resnet20.pt")
    assert meta["test"]["top1"] == pytest.approx(committed["accuracy"]["fp_top1"])
    record, _ = uniform_ptq_run(model, cifar_splits, "resnet20", settings, "cpu",
                                committed["accuracy"]["fp_top1"], "W4A8", "nearest")
    assert record.policy == committed["policy"]
    assert abs(record.accuracy["top1"] - committed["accuracy"]["top1"]) <= PTQ_TOLERANCE, (
        record.accuracy["top1"], committed["accuracy"]["top1"])
