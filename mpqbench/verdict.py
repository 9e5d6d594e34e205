"""Generated verdicts on a paper's claim from two measured accuracies.

A verdict compares a method's test top-1 with its baseline's on the same test images and
says ``reproduced`` only when the difference clears its 95% interval, ``not reproduced`` when
it is below minus that interval, and ``inconclusive`` otherwise. With both runs' per-image
hits (RunRecord ``extra.test_correct``) the interval is the paired bootstrap of
``intervals.paired_bootstrap`` (test sampling, paired; seeds too when given); without them,
the normal approximation of the difference of two independent binomial proportions, each on
``images`` test images (``1.96 * sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n)``), wider because it
ignores the pairing. With one seed, run-to-run noise is not in either, which the text says;
a claim on two trained runs of one seed each is ``inconclusive (one training seed)`` whatever
its interval (``OneSeedTrainingVerdict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mpqbench.intervals import Interval

Z_95 = 1.96


@dataclass(frozen=True)
class Verdict:
    """``claim`` (what the paper says), the two top-1 values (%), their difference
    (method - baseline, points), its 95% half-width (points) and the outcome."""

    claim: str
    method: str
    baseline: str
    method_top1: float
    baseline_top1: float
    images: int
    margin: float = 0.0
    interval: Interval | None = None  # a paired interval of the difference, when known

    @property
    def difference(self) -> float:
        return self.method_top1 - self.baseline_top1

    @property
    def half_width(self) -> float:
        if self.interval is not None:
            return self.interval.half_width
        p1, p2 = self.method_top1 / 100, self.baseline_top1 / 100
        n = max(self.images, 1)
        return 100 * Z_95 * math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / n)

    @property
    def outcome(self) -> str:
        """``reproduced`` when difference + margin > half-width; ``not reproduced`` when
        difference + margin < -half-width; else ``inconclusive``. ``margin`` turns "better
        than" (0) into "no worse than by ``margin`` points"."""
        if self.interval is not None:
            low, high = self.interval.low + self.margin, self.interval.high + self.margin
        else:
            shifted = self.difference + self.margin
            low, high = shifted - self.half_width, shifted + self.half_width
        if low > 0:
            return "reproduced"
        if high < 0:
            return "not reproduced"
        return "inconclusive"

    def text(self) -> str:
        if self.interval is not None:
            spread = (f" [{self.interval.low:+.2f}, {self.interval.high:+.2f}] points, 95% "
                      f"{self.interval.kind} bootstrap interval on {self.images:,} images")
        else:
            spread = (f" +- {self.half_width:.2f} points, 95% test-sampling interval on "
                      f"{self.images:,} images, one seed")
        return (f"{self.claim}: {self.outcome} ({self.method} {self.method_top1:.2f} vs "
                f"{self.baseline} {self.baseline_top1:.2f}, difference {self.difference:+.2f}"
                f"{spread})")

    def to_dict(self) -> dict:
        return {"claim": self.claim, "method": self.method, "baseline": self.baseline,
                "method_top1": self.method_top1, "baseline_top1": self.baseline_top1,
                "difference": self.difference, "half_width": self.half_width,
                "margin": self.margin, "images": self.images, "outcome": self.outcome}


ONE_TRAINING_SEED = "inconclusive (one training seed)"


@dataclass(frozen=True)
class OneSeedTrainingVerdict(Verdict):
    """A claim on two trained (QAT) runs of one seed each. Its interval covers test sampling
    only, not training noise, which is larger: re-running this suite's QAT records after a
    float-level change of the LSQ gradient (issue 20) moved them by a median 0.27 points and
    up to 2.30, and turned SAQ's W2A2 gain of +2.37 [+1.22, +3.43] into -0.13. So its outcome
    is ``inconclusive (one training seed)`` whatever the interval; the grid's QAT cells with
    2 or more seeds (a paired bootstrap over seeds and images) can judge such a claim."""

    @property
    def outcome(self) -> str:
        return ONE_TRAINING_SEED


def saq_verdicts(results, splits_images: int) -> list[Verdict]:
    """One verdict per width where both ``W?A?-qat_lsq`` and ``W?A?-qat_saq`` ran
    (``results``: a frame with ``run`` and ``top1``), and for the mixed policy if present;
    each side is one training run, so each outcome is ``ONE_TRAINING_SEED``."""
    top1 = dict(zip(results["run"], results["top1"], strict=True))
    out = []
    for run, value in top1.items():
        if not run.endswith("-qat_saq"):
            continue
        prefix = run[: -len("-qat_saq")]
        baseline = top1.get(f"{prefix}-qat_lsq")
        if baseline is not None:
            out.append(OneSeedTrainingVerdict(
                f"SAQ beats plain QAT at {prefix}", "qat_saq", "qat_lsq", float(value),
                float(baseline), splits_images))
    return out


def limpq_verdicts(results, images: int) -> list[Verdict]:
    """LIMPQ at ``W?A?eq`` BitOps against uniform ``W?A?`` (``results``: ``policy`` labels
    ``LIMPQ W4A4eq`` / ``uniform W4A4`` and ``top1``); both sides are trained once, so
    each outcome is ``ONE_TRAINING_SEED``."""
    top1 = dict(zip(results["policy"], results["top1"], strict=True))
    out = []
    for policy, value in top1.items():
        if policy.startswith("LIMPQ ") and policy.endswith("eq"):
            config = policy[len("LIMPQ "):-len("eq")]
            baseline = top1.get(f"uniform {config}")
            if baseline is not None:
                out.append(OneSeedTrainingVerdict(
                    f"LIMPQ beats uniform at {config}-equivalent BitOps", "LIMPQ",
                    f"uniform {config}", float(value), float(baseline), images))
    return out


def allocator_verdicts(results, method: str, baselines: list[str], images: int
                       ) -> list[Verdict]:
    """``method`` against each of ``baselines`` at every budget where both ran
    (``results``: ``budget``, ``metric`` and ``top1`` columns)."""
    out = []
    for budget, group in results.groupby("budget", sort=False):
        top1 = dict(zip(group["metric"], group["top1"], strict=True))
        if method not in top1:
            continue
        for baseline in baselines:
            if baseline in top1:
                out.append(Verdict(f"{method} beats {baseline} at {budget}", method, baseline,
                                   float(top1[method]), float(top1[baseline]), images))
    return out


def spearman_verdict(correlations, method: str, baseline: str) -> str:
    """Which table ranks the policy bank better (``correlations``: a frame indexed by table
    with a ``spearman`` column). No interval: the bank is one sample of policies, so the text
    says the difference only."""
    rho_m = float(correlations.loc[method, "spearman"])
    rho_b = float(correlations.loc[baseline, "spearman"])
    better = "higher" if rho_m > rho_b else "not higher"
    return (f"ranking: {method} Spearman {rho_m:.3f} vs {baseline} {rho_b:.3f}: {better} "
            f"(one policy bank, no interval)")
