"""The comparison report's tables and figures, built from RunRecords alone.

Every function takes the run frame (``run_frame``): one row per RunRecord with its identity,
allocator (the metric that drove the search, or ``uniform`` / ``random``), protocol, budget
label, cost, accuracy, timing and seed. A method without runs simply has no rows; nothing
here fails on an empty or partial set of runs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from mpqbench.cost import Budget
from mpqbench.naming import budget_label
from mpqbench.published import PUBLISHED
from mpqbench.report import summary_table
from mpqbench.results import RunRecord

TIMING = ("sensitivity_s", "search_s", "protocol_s")


def _budget_label(budget: dict[str, Any] | None) -> str:
    return budget_label(Budget.from_dict(budget)) if budget else ""


def budget_title(budget: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> str:
    """A budget as a reader says it: ``8x size``, ``W4A4-equivalent BitOps``, ``0.16 MiB``,
    ``1.15 G BitOps``, ``mean 4 weight bits``; HAWQ-V3's interpolated budgets as ``HAWQ-V3
    size r=0.25``; a uniform run as ``uniform W4A8``; empty for the FP run."""
    extra = extra or {}
    if "hawq_v3" in extra:
        return f"HAWQ-V3 {extra['hawq_v3']['kind']} r={extra['hawq_v3']['r']:g}"
    if not budget:
        return f"uniform {extra['config']}" if "config" in extra else ""
    parts = []
    for key, value in Budget.from_dict(budget).describe().items():
        if key == "bitops_equiv":
            parts.append(f"W{value[0]}A{value[1]}-equivalent BitOps")
        else:
            parts.append({"compression_ratio": f"{value:g}x size", "size_mib": f"{value:.3g} MiB",
                          "bitops_g": f"{value:.3g} G BitOps",
                          "mean_w_bits": f"mean {value:g} weight bits"}[key])
    return " and ".join(parts)


def budget_family(budget: dict[str, Any] | None, extra: dict[str, Any] | None = None) -> str:
    """``size`` (weight size or ratio), ``bitops``, ``uniform`` or ``fp``: the report's table
    a run's policy belongs to."""
    if not budget:
        return "uniform" if "config" in (extra or {}) else "fp"
    return "bitops" if {"bitops_equiv", "bitops_g"} & set(budget) else "size"


def recipe(run: RunRecord) -> str:
    """The protocol and what else sets its result apart: for QAT the number of steps and the
    step options that are not SAQ's defaults (``qat_saq, 100 steps, rho 0.4``)."""
    extra = run.extra or {}
    if not run.protocol.startswith("qat"):
        return run.protocol
    parts = [run.protocol]
    curve = extra.get("loss_curve") or []
    if curve:
        parts.append(f"{int(curve[-1]['step'])} steps")
    options = extra.get("step_options") or {}
    if "rho" in options:
        parts.append(f"rho {options['rho']:g}")
    if options.get("case", 3) != 3:
        parts.append(f"case {options['case']}")
    if options.get("every", 1) != 1:
        parts.append(f"every {options['every']}")
    return ", ".join(parts)


def config_key(run: RunRecord) -> str:
    """A hash of everything that sets a run's result but its seed: model, data, protocol and
    its settings (QAT schedule, step options, PTQ settings, calibration data) and the policy.
    Runs with the same key differ only in their seed (or are repeats) and may be averaged;
    runs with different keys never are."""
    extra = run.extra or {}
    qat = {k: v for k, v in (extra.get("qat") or {}).items() if k != "seed"}
    settings = {"model": run.model, "data": run.dataset_variant, "protocol": run.protocol,
                "qat": qat, "step_options": extra.get("step_options"), "ptq": extra.get("ptq"),
                "calibration": [extra.get("calibration"), extra.get("calibration_data")],
                "layers": (run.policy or {}).get("layers")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                          ).hexdigest()[:12]


def _allocator(run: RunRecord) -> str:
    if run.method == "fp":
        return "fp"
    if run.solver in ("uniform", "random") or not run.metric:
        return run.solver or "uniform"
    return run.metric


def run_frame(runs: list[RunRecord]) -> pd.DataFrame:
    """``summary_table`` plus allocator, budget label, seed, the timing phases, the policy's
    dataset and the RunRecord's ``extra`` (for the tables that need it)."""
    base = summary_table(runs)
    if not len(base):
        return base.assign(allocator=[], budget=[], budget_title=[], family=[], recipe=[],
                           config=[], seed=[], extra=[], policy=[], **{k: [] for k in TIMING})
    base["allocator"] = [_allocator(r) for r in runs]
    # a grid run's budget is its declared name (params.yaml budgets), else a label of its limits
    base["budget"] = [(r.extra or {}).get("budget_name") or _budget_label(r.budget) for r in runs]
    base["budget_title"] = [budget_title(r.budget, r.extra) for r in runs]
    base["family"] = [budget_family(r.budget, r.extra) for r in runs]
    base["recipe"] = [recipe(r) for r in runs]
    base["config"] = [config_key(r) for r in runs]
    base["seed"] = [r.provenance.get("seed") for r in runs]
    for key in TIMING:
        base[key] = [float(r.timing.get(key, 0.0)) for r in runs]
    base["extra"] = [r.extra for r in runs]
    base["policy"] = [r.policy for r in runs]
    return base


def pareto_front(frame: pd.DataFrame, x: str, y: str = "top1") -> pd.DataFrame:
    """The rows no other row beats: none with ``x`` as small (or smaller) and higher ``y``."""
    ordered = frame.sort_values([x, y], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, row in ordered.iterrows():
        if row[y] > best:
            keep.append(index)
            best = row[y]
    return ordered.loc[keep]


def seed_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that differ only in the seed, merged: mean top-1 and its std over seeds."""
    keys = ["model", "method", "allocator", "protocol", "budget", "run_id_base"]
    frame = frame.assign(run_id_base=frame.run_id.str.replace(r"-seed\d+$", "", regex=True))
    grouped = frame.groupby(keys, dropna=False)
    out = grouped.agg(size_mib=("size_mib", "mean"), bitops_g=("bitops_g", "mean"),
                      top1=("top1", "mean"), top1_std=("top1", "std"), seeds=("seed", "nunique"),
                      fp_top1=("fp_top1", "mean"))
    return out.reset_index()



DENSE = 0.5  # a pivot is shown only when at least this share of its cells holds a run


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, budget, allocator, recipe) and configuration: the mean top-1 over
    the runs of one configuration (seeds or repeats) and their count. Where one cell holds
    several configurations, the allocator is suffixed with the method (then the run id) so
    that they stay apart."""
    keys = ["model", "family", "budget_title", "allocator", "recipe"]
    rows = []
    for _, cell in frame.groupby(keys, sort=False):
        split = "method" if cell.config.nunique() > 1 else None
        if split and cell.groupby("method").config.nunique().max() > 1:
            split = "run_id"
        for tag, group in cell.groupby(split, sort=False) if split else [(None, cell)]:
            first = group.iloc[0]
            rows.append({**{k: first[k] for k in keys},
                         "allocator": first.allocator + (f" [{tag}]" if split else ""),
                         "top1": group.top1.mean(), "runs": len(group),
                         "seeds": group.seed.nunique()})
    return pd.DataFrame(rows, columns=[*keys, "top1", "runs", "seeds"])


def allocator_protocol_matrix(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per budget family (``size``, ``bitops``, ``uniform``, ...): rows (model, budget,
    allocator), columns: recipe (protocol and its settings), cells: mean test top-1 over the
    seeds of one configuration, never over different settings. A family whose pivot would be
    mostly empty (under ``DENSE``) is a long table instead, one row per cell."""
    runs = frame[frame.method != "fp"]
    if not len(runs):
        return {}
    out = {}
    for family, part in _cells(runs).groupby("family", sort=True):
        pivot = part.pivot_table(index=["model", "budget_title", "allocator"], columns="recipe",
                                 values="top1", aggfunc="first").round(2)
        if pivot.notna().to_numpy().mean() >= DENSE:
            out[family] = pivot
        else:
            out[family] = part.drop(columns="family").sort_values(
                ["model", "budget_title", "allocator", "recipe"]).reset_index(drop=True).round(2)
    return out


def shared_budgets(frame: pd.DataFrame) -> list[str]:
    """Budget labels at which at least two allocators chose a policy: the ones whose bits per
    layer are worth showing side by side."""
    searched = frame[frame.policy.notna() & ~frame.allocator.isin(["uniform", "fp"])
                     & (frame.budget != "")]
    counts = searched.groupby("budget").allocator.nunique()
    return sorted(counts[counts >= 2].index)


def bits_at_budget(frame: pd.DataFrame, budget: str, key: str = "w_bits") -> pd.DataFrame:
    """Layers x runs: ``key`` per layer of every searched policy at ``budget`` (a label such
    as ``ratio8`` or ``W4A4eq``), columns named allocator / protocol."""
    runs = frame[(frame.budget == budget) & frame.policy.notna()
                 & (frame.allocator != "uniform")].drop_duplicates(["allocator", "protocol"])
    columns = {f"{r.allocator} / {r.protocol}": {n: b[key] for n, b in r.policy["layers"].items()}
               for r in runs.itertuples()}
    return pd.DataFrame(columns)


def metric_quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Rank correlation of every sensitivity table with the policy bank's measured drops,
    from the RunRecords that carry ``extra.metric_quality``, with each table's cost where a
    run allocated with it."""
    rows, costs = [], {}
    for r in frame.itertuples():
        extra = r.extra or {}
        if "table" in extra and "sensitivity_cost" in extra:
            costs[(r.model, extra["table"])] = extra["sensitivity_cost"].get("seconds")
        quality = extra.get("metric_quality") or {}
        for table, q in quality.get("tables", {}).items():
            rows.append({"model": r.model, "table": table, "spearman": q["spearman"],
                         "kendall": q["kendall"], "policies": q["policies"]})
    out = pd.DataFrame(rows, columns=["model", "table", "spearman", "kendall", "policies"])
    out = out.drop_duplicates(["model", "table"]).reset_index(drop=True)
    out["seconds"] = [costs.get((m, t)) for m, t in zip(out.model, out.table, strict=True)]
    return out.sort_values(["model", "spearman"], ascending=[True, False])


def _matches(frame: pd.DataFrame, match: dict[str, str]) -> pd.DataFrame:
    rows = frame
    for key, value in match.items():
        if key == "run_id_suffix":
            rows = rows[rows.run_id.str.endswith(value)]
        else:
            rows = rows[rows[key] == value]
    return rows


def paper_vs_reproduced(frame: pd.DataFrame) -> pd.DataFrame:
    """Each published headline next to the comparable run(s) here: model, dataset, budget
    and FP baseline of both, and the drop (FP - quantized top-1, points)."""
    rows = []
    for entry in PUBLISHED:
        found = _matches(frame, entry["match"])
        paper = {"method": entry["method"], "source": entry["source"],
                 "paper setting": f"{entry['model']}, {entry['dataset']}, {entry['budget']}",
                 "paper FP": entry["fp_top1"], "paper top-1": entry["top1"],
                 "paper drop": entry["drop"], "paper search s": entry.get("search_s")}
        if not len(found):
            rows.append({**paper, "here": "no run yet"})
            continue
        for r in found.itertuples():
            rows.append({**paper, "here": f"{r.model}, {r.dataset_variant}, {r.run_id}",
                         "FP": r.fp_top1, "top-1": r.top1, "drop": r.drop,
                         "search s": r.search_s, "protocol": r.protocol})
    return pd.DataFrame(rows)


def method_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and model: runs, the mean seconds per run of sensitivity, search and
    protocol (training or PTQ), and the summed wall seconds of all its runs
    (``all_runs_s``), on the recorded device."""
    runs = frame[frame.method != "fp"]
    if not len(runs):
        return pd.DataFrame()
    out = runs.groupby(["model", "method", "device"]).agg(
        runs=("run_id", "count"), sensitivity_s=("sensitivity_s", "mean"),
        search_s=("search_s", "mean"), protocol_s=("protocol_s", "mean"),
        all_runs_s=("total_s", "sum"))
    return out.round(3).reset_index()


def run_metrics(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per run id, its test top-1 and drop (points), size (MiB) and BitOps (G), rounded to 4
    digits: the report's DVC metrics, one small file a run (``results/metrics/runs/``), so
    that ``dvc metrics show`` is a table of runs x these four and ``dvc metrics diff`` lists
    what changed."""
    return {str(row.run_id): {"top1": round(float(row.top1), 4),
                              "drop": round(float(row.drop), 4),
                              "size_mib": round(float(row.size_mib), 4),
                              "bitops_g": round(float(row.bitops_g), 4)}
            for row in frame.sort_values("run_id").itertuples()}
