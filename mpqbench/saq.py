"""The SAQ comparison (Liu, Cai, Zhuang): ``qat_saq`` against ``qat_lsq`` on the same policies.

``saq_grid`` runs, with one QAT schedule and seed: every uniform config both ways; SAQ (case 3)
at other values of rho; cases 1 and 2 and the every-k-steps schedule at one width; and a mixed
policy taken from another method's RunRecord both ways. The step itself is
``train.SaqStep``; here are only the runs and their ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mpqbench.context import Context
from mpqbench.cost import Budget
from mpqbench.naming import budget_label, run_id, run_key
from mpqbench.protocols import Allocation, RunOutcome, run_policy, uniform_allocation
from mpqbench.quant.policy import validate_policy
from mpqbench.results import RunRecord, find_run
from mpqbench.train import QatConfig


@dataclass
class SaqRuns:
    """One row per run (``run``: its label, ``protocol``, cost, accuracy, training seconds,
    seconds a step, forward passes a step) and each run's per-step history by label."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def results(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        plain = frame.loc[frame.protocol == "qat_lsq", "s_per_step"].mean()
        frame["cost / plain step"] = frame["s_per_step"] / plain
        return frame

    def add(self, label: str, outcome: RunOutcome) -> None:
        trained = outcome.output.result
        self.curves[label] = pd.DataFrame(trained.history["steps"])
        self.rows.append({"run": label, "protocol": outcome.record.protocol,
                          **outcome.record.cost, **outcome.record.accuracy,
                          "train_s": trained.seconds, "s_per_step": trained.seconds_per_step(),
                          "passes": trained.step.forward_passes})


def source_run(ctx: Context, source: dict[str, Any]) -> RunRecord | None:
    """The RunRecord of another method's policy (``method_cfg.saq.mixed_policy``: its
    ``method``, ``budget`` and ``protocol``) for this context's model, from that method's
    results folder beside this one; None when it has not run yet."""
    if ctx.runs_dir is None:
        return None
    method = source["method"]
    folder = Path(ctx.runs_dir).parent / run_key(method, ctx.model_name)
    return find_run(folder, run_id(method, ctx.model_name,
                                   budget_label(Budget.from_dict(source["budget"])),
                                   source["protocol"]))


def saq_grid(ctx: Context, cfg: dict[str, Any], qat: QatConfig) -> tuple[SaqRuns, RunRecord | None]:
    """Every run of ``method_cfg.saq`` (see the module doc); run ids ``saq-<model>-<label>``.
    Returns the runs and the record the mixed policy came from (None: skipped, not run yet)."""
    runs = SaqRuns()
    space = cfg["perturb_space"]

    def train(label: str, allocation: Allocation, protocol: str, rho: float | None = None,
              extra: dict[str, Any] | None = None, **options: Any) -> None:
        step = {} if rho is None else {"rho": rho, "case": 3, "perturb_space": space, **options}
        outcome = run_policy(ctx, allocation, protocol, method="saq", qat=qat, options=step,
                             run_id=run_id("saq", ctx.model_name, label), extra=extra)
        runs.add(label, outcome)

    for config in cfg["configs"]:
        uniform = uniform_allocation(ctx, config)
        train(f"{config}-qat_lsq", uniform, "qat_lsq")
        train(f"{config}-qat_saq", uniform, "qat_saq", cfg["rho"], {"case": 3})
    at, rho = cfg["cases_at"], cfg["cases_rho"]
    uniform = uniform_allocation(ctx, at)
    for sweep_rho in cfg["rho_sweep"]:
        train(f"{at}-qat_saq-rho{sweep_rho:g}", uniform, "qat_saq", sweep_rho, {"case": 3})
    for case in (c for c in cfg["cases"] if c != 3):
        train(f"{at}-qat_saq-case{case}-rho{rho:g}", uniform, "qat_saq", rho, {"case": case},
              case=case)
    for every in cfg["every"]:
        train(f"{at}-qat_saq-every{every}-rho{rho:g}", uniform, "qat_saq", rho,
              {"case": 3, "every": every}, every=every)
    found = source_run(ctx, cfg["mixed_policy"]) if cfg.get("mixed_policy") else None
    if found is not None:
        bits = validate_policy(found.policy, [layer.name for layer in ctx.layers],
                               found.run_id).bits()
        mixed = Allocation(bits, metric=found.metric, solver=found.solver, budget=found.budget)
        origin = {"policy_from": found.run_id}
        train("mixed-qat_lsq", mixed, "qat_lsq", extra=origin)
        train("mixed-qat_saq", mixed, "qat_saq", cfg["rho_mixed"], origin)
    return runs, found
