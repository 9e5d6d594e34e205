"""95% intervals for test top-1 and for paired differences of it, over seeds and test images.

Two sources of noise move a cell of the report: the run's seed (calibration draw, AdaRound's
init, QAT's batch order) and the finite test set. ``seed_interval`` is Student's t over seeds
(seed noise only; the test images are the same for every seed). ``sampling_interval`` is the
normal approximation of a binomial proportion (test sampling only, for one seed).
``paired_bootstrap`` compares two runs on the same test images with the same seeds: it
resamples seeds (when there are several) and images together and reports the percentile
interval of the difference of mean top-1, so both sources are in it, and the pairing removes
the share of noise the two runs have in common (Efron and Tibshirani 1993, ch. 13; the paired
design is the usual one for classifiers evaluated on one test set, e.g. Bouthillier et al.
2021, "Accounting for variance in machine learning benchmarks").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054
# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom 1..30 (standard
# tables); beyond 30 the normal quantile, at most 2% narrower
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    return T_975[df - 1] if df <= len(T_975) else Z_95


@dataclass(frozen=True)
class Interval:
    """``estimate`` and its 95% interval [``low``, ``high``] in points of top-1; ``kind``
    names the noise it covers (``seeds``, ``test sampling`` or ``seeds and test images,
    paired``)."""

    estimate: float
    low: float
    high: float
    kind: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0: distinguishable from noise."""
        return self.low > 0 or self.high < 0

    def text(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def seed_interval(top1: list[float]) -> Interval:
    """Mean top-1 over seeds (points) and Student's t interval; needs two seeds or more."""
    values = np.asarray(top1, dtype=float)
    if len(values) < 2:
        raise ValueError(f"a seed interval needs two seeds or more, got {len(values)}")
    mean = float(values.mean())
    half = float(t_975(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return Interval(mean, mean - half, mean + half, "seeds")


def sampling_interval(top1: float, images: int) -> Interval:
    """One run's top-1 (points) with the normal-approximation interval of a proportion
    measured on ``images`` test images."""
    p = top1 / 100
    half = 100 * Z_95 * math.sqrt(max(p * (1 - p), 0.0) / max(images, 1))
    return Interval(top1, top1 - half, top1 + half, "test sampling")


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 2000,
                     seed: int = 0, chunk: int = 250) -> Interval:
    """Mean top-1 of A minus B (points) with a 95% percentile bootstrap interval.

    ``correct_a``, ``correct_b``: boolean arrays (seeds, images), row ``s`` of both from the
    same seed and column ``i`` from the same test image. Each resample draws seeds (when
    there are several) and images with replacement, the same ones for A and B.
    """
    a, b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired runs need the same seeds and images: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)  # (seeds, images), in {-1, 0, 1}
    seeds, images = diff.shape
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        weights = rng.multinomial(images, np.full(images, 1 / images), size=n)  # (n, images)
        per_seed = diff @ weights.T / images  # (seeds, n): each seed's resampled difference
        if seeds > 1:
            picks = rng.integers(0, seeds, size=(seeds, n))
            draws.append(per_seed[picks, np.arange(n)].mean(axis=0))
        else:
            draws.append(per_seed[0])
    samples = 100 * np.concatenate(draws)
    low, high = np.percentile(samples, [2.5, 97.5])
    kind = "seeds and test images, paired" if seeds > 1 else "test images, paired (one seed)"
    return Interval(100 * float(diff.mean()), float(low), float(high), kind)
