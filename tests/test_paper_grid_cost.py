"""benchmarks.paper_grid_cost: the cells its estimate counts, against a hand count."""

from pathlib import Path

import pytest

from benchmarks.paper_grid_cost import served_cells
from mpqbench.config import load_params, profile_settings
from mpqbench.errors import MpqbenchError

ROOT = Path(__file__).resolve().parents[1]
ALLOCATIONS = ROOT / "results/grid/allocations"


@pytest.mark.parametrize(("profile", "expected"), [
    # paper: the size budgets are served by 8 of the 9 allocators (hawq_v3's {4, 8} widths
    # cannot reach 8x or 10.67x), 2 budgets x 8 x 3 seeds of PTQ nearest, size8x alone x 8 x
    # 3 of AdaRound; each QAT protocol: W4A4eq by uniform, random, hawq_v3 and limpq (the
    # weight-only allocators do not serve BitOps budgets), W3A3eq the same less hawq_v3,
    # size8x only uniform and limpq: 9 x 3 seeds
    ("paper", {"ptq-nearest": 48, "ptq-adaround": 24, "qat_lsq": 27, "qat_saq": 27}),
    # quick: AdaRound and SAQ cut; QAT-LSQ uniform and limpq at the two BitOps budgets x 2
    ("quick", {"ptq-nearest": 48, "ptq-adaround": 0, "qat_lsq": 8, "qat_saq": 0}),
])
def test_the_counted_cells_match_a_hand_count(profile, expected):
    settings = profile_settings(profile, load_params(ROOT / "params.yaml"))
    assert served_cells(settings, ALLOCATIONS) == expected


def test_missing_allocations_are_named_with_the_stage_that_makes_them(tmp_path):
    settings = profile_settings("paper", load_params(ROOT / "params.yaml"))
    with pytest.raises(MpqbenchError, match=r"dvc repro allocate@uniform-resnet20"):
        served_cells(settings, tmp_path)
