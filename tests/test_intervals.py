"""Intervals against their closed forms and against what must hold for any data."""

import math

import numpy as np
import pytest

from mpqbench.intervals import paired_bootstrap, sampling_interval, seed_interval


def test_seed_interval_is_students_t():
    values = [80.0, 81.0, 83.0]
    interval = seed_interval(values)
    # t(0.975, 2) = 4.3027; std = 1.5275; half = 4.3027 * 1.5275 / sqrt(3)
    assert interval.estimate == pytest.approx(81.3333, abs=1e-4)
    assert interval.half_width == pytest.approx(4.302653 * 1.527525 / math.sqrt(3), rel=1e-4)
    assert interval.kind == "seeds"
    with pytest.raises(ValueError, match="two seeds"):
        seed_interval([80.0])


def test_the_sampling_interval_is_the_binomial_normal_approximation():
    interval = sampling_interval(85.0, 10_000)
    assert interval.half_width == pytest.approx(100 * 1.96 * math.sqrt(0.85 * 0.15 / 10_000),
                                                rel=1e-3)
    assert not interval.excludes_zero() or interval.low > 0


def test_paired_bootstrap_matches_the_paired_normal_interval_with_one_seed():
    rng = np.random.default_rng(1)
    a = rng.random(10_000) < 0.85
    b = a.copy()
    flip = rng.random(10_000) < 0.04  # b differs from a on 4% of the images
    b[flip] = ~b[flip]
    interval = paired_bootstrap(a[None], b[None], resamples=4000)
    d = a.astype(float) - b.astype(float)
    half = 100 * 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert interval.estimate == pytest.approx(100 * d.mean())
    assert interval.half_width == pytest.approx(half, rel=0.1)
    # pairing: far narrower than the unpaired interval of two 85% proportions
    assert interval.half_width < 0.5 * 100 * 1.96 * math.sqrt(2 * 0.85 * 0.15 / 10_000)


def test_identical_runs_give_a_zero_interval_and_a_dominating_one_excludes_zero():
    rng = np.random.default_rng(2)
    a = rng.random((3, 2000)) < 0.8
    same = paired_bootstrap(a, a.copy())
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()
    better = a.copy()
    better[:, :200] = True  # A's errors on the first 200 images fixed in every seed
    gain = paired_bootstrap(better, a)
    assert gain.excludes_zero() and gain.low > 0 and gain.kind.startswith("seeds")


def test_seed_noise_widens_the_paired_interval():
    rng = np.random.default_rng(3)
    base = rng.random((1, 5000)) < 0.8
    # B = A plus a seed-dependent shift: seeds disagree by several points
    shifts = [0.0, 0.05, 0.10]
    b = np.vstack([base[0] & (rng.random(5000) > s) for s in shifts])
    a = np.repeat(base, 3, axis=0)
    with_seeds = paired_bootstrap(a, b)
    one_seed = paired_bootstrap(a[:1], b[1:2])
    assert with_seeds.half_width > one_seed.half_width


def test_shapes_must_pair():
    with pytest.raises(ValueError, match="same seeds and images"):
        paired_bootstrap(np.ones((2, 10), bool), np.ones((3, 10), bool))
