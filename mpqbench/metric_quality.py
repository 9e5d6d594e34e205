"""How well a sensitivity table predicts the measured drop of the policy bank's random policies.

The bank (``mpqbench.policy_bank``) holds random mixed policies at one budget with their
measured validation drops; a table's prediction of a policy is the sum of its layers' scores.
Quality is the rank correlation of the two (Spearman's rho, Kendall's tau-b), as in the
data-free metric's paper (Lee et al. 2021) and ZeroQ's ablations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from mpqbench.policy_bank import measured_drops, predicted_scores, rank_correlations
from mpqbench.sensitivity import SensitivityTable


@dataclass
class MetricQuality:
    """``correlations``: one row per table (spearman, kendall, policies); ``points``: every
    (table, predicted, measured_drop); ``drops``: the bank's measured drops (points);
    ``budget``/``bits``: the bank's setting."""

    correlations: pd.DataFrame
    points: pd.DataFrame
    drops: pd.Series
    budget: dict[str, Any]
    bits: list[int]

    @property
    def policies(self) -> int:
        return len(self.drops)

    def record(self) -> dict[str, Any]:
        """What each RunRecord keeps (``extra.metric_quality``): the bank's setting and every
        table's correlations."""
        return {"policy_bank": {"policies": self.policies, "budget": self.budget,
                                "bits": self.bits},
                "tables": self.correlations.to_dict(orient="index")}


def metric_quality(tables: dict[str, SensitivityTable], bank: dict[str, Any]) -> MetricQuality:
    """Every table's rank correlation with the bank's measured drops (rounded to 3 digits)."""
    drops = measured_drops(bank)
    rows, points = [], []
    for name, table in tables.items():
        predicted = predicted_scores(table.frame, bank)
        rows.append({"table": name, **rank_correlations(predicted, drops)})
        points += [{"table": name, "predicted": p, "measured_drop": d}
                   for p, d in zip(predicted, drops, strict=True)]
    correlations = pd.DataFrame(rows).set_index("table").round(3)
    return MetricQuality(correlations, pd.DataFrame(points), drops, bank["config"]["budget"],
                         bank["config"]["bits"])
