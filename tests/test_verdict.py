import math

import numpy as np
import pandas as pd
import pytest

from mpqbench.intervals import paired_bootstrap
from mpqbench.results import decode_correct, encode_correct
from mpqbench.verdict import ONE_TRAINING_SEED, Verdict, limpq_verdicts, saq_verdicts


def test_half_width_is_the_binomial_difference_interval():
    v = Verdict("c", "m", "b", 85.0, 80.0, 10_000)
    expected = 100 * 1.96 * math.sqrt(0.85 * 0.15 / 1e4 + 0.8 * 0.2 / 1e4)
    assert v.half_width == pytest.approx(expected)
    assert v.difference == pytest.approx(5.0)


@pytest.mark.parametrize("method,baseline,margin,outcome", [
    (85.0, 80.0, 0.0, "reproduced"),
    (80.0, 85.0, 0.0, "not reproduced"),
    (83.6, 83.5, 0.0, "inconclusive"),
    (82.8, 83.5, 1.0, "inconclusive"),   # within 1 point, but not clearly
    (83.5, 83.5, 2.0, "reproduced"),     # "no worse than by 2 points", clearly
])
def test_outcomes(method, baseline, margin, outcome):
    v = Verdict("c", "m", "b", method, baseline, 10_000, margin)
    assert v.outcome == outcome
    assert outcome in v.text() and f"{v.difference:+.2f}" in v.text()


def test_fewer_images_widen_the_interval():
    assert Verdict("c", "m", "b", 85, 84, 500).outcome == "inconclusive"
    assert Verdict("c", "m", "b", 85, 84, 500).half_width > Verdict("c", "m", "b", 85, 84,
                                                                    10_000).half_width


def test_a_paired_interval_decides_where_the_unpaired_one_cannot():
    """Two runs that differ on few images: the paired bootstrap sees a real gain that the
    interval of two independent proportions calls inconclusive."""
    rng = np.random.default_rng(0)
    base = rng.random(10_000) < 0.85
    better = base.copy()
    better[np.flatnonzero(~base)[:60]] = True  # 60 more images right, none lost: +0.6 points
    interval = paired_bootstrap(better[None], base[None])
    plain = Verdict("c", "a", "b", 100 * better.mean(), 100 * base.mean(), 10_000)
    paired = Verdict("c", "a", "b", 100 * better.mean(), 100 * base.mean(), 10_000,
                     interval=interval)
    assert plain.outcome == "inconclusive" and paired.outcome == "reproduced"
    assert paired.half_width == interval.half_width < plain.half_width
    assert "paired" in paired.text() and "[+" in paired.text()


def test_stored_hits_round_trip():
    hits = np.random.default_rng(1).random(1001) < 0.5
    stored = encode_correct(hits)
    assert stored["images"] == 1001 and np.array_equal(decode_correct(stored), hits)


def test_the_method_notebooks_one_seed_qat_claims_are_inconclusive_whatever_the_gap():
    """SAQ and LIMPQ compare one training run a side: a 10-point gap, far outside its
    test-sampling interval, still reads inconclusive, as in the report (conclusions.py)."""
    saq = saq_verdicts(pd.DataFrame({"run": ["W2A2-qat_lsq", "W2A2-qat_saq"],
                                     "top1": [60.0, 70.0]}), splits_images=10_000)
    limpq = limpq_verdicts(pd.DataFrame({"policy": ["uniform W4A4", "LIMPQ W4A4eq"],
                                         "top1": [85.0, 75.0]}), images=10_000)
    for verdict, plain in ((saq, "reproduced"), (limpq, "not reproduced")):
        assert len(verdict) == 1 and verdict[0].outcome == ONE_TRAINING_SEED
        assert ONE_TRAINING_SEED in verdict[0].text()
        # the same numbers as a plain Verdict would have been decided
        assert Verdict(*(getattr(verdict[0], k) for k in (
            "claim", "method", "baseline", "method_top1", "baseline_top1", "images"))
        ).outcome == plain
