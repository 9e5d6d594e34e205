"""The comparison report's tables and figures, built from RunRecords alone.

Every function takes the run frame (``run_frame``): one row per RunRecord with its identity,
allocator (the metric that drove the search, or ``uniform`` / ``random``), protocol, budget
label, cost, accuracy, timing and seed. A method without runs simply has no rows; nothing
here fails on an empty or partial set of runs.
"""

from __future__ import annotations

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
        return base.assign(allocator=[], budget=[], seed=[], extra=[], policy=[],
                           **{k: [] for k in TIMING})
    base["allocator"] = [_allocator(r) for r in runs]
    base["budget"] = [_budget_label(r.budget) for r in runs]
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



def allocator_protocol_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: (model, budget, allocator); columns: protocol; cells: mean test top-1. Reads
    allocator quality (down a column) apart from the training recipe (along a row)."""
    runs = frame[(frame.method != "fp") & (frame.allocator != "uniform")]
    uniform = frame[frame.allocator == "uniform"].copy()
    uniform["budget"] = uniform.extra.map(lambda e: e.get("config", ""))
    both = pd.concat([runs, uniform])
    if not len(both):
        return pd.DataFrame()
    return both.pivot_table(index=["model", "budget", "allocator"], columns="protocol",
                            values="top1", aggfunc="mean").round(2)


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
    """Per method and model: runs, and the mean seconds of sensitivity, search and protocol
    (training or PTQ) per run, wall time on the recorded device."""
    runs = frame[frame.method != "fp"]
    if not len(runs):
        return pd.DataFrame()
    out = runs.groupby(["model", "method", "device"]).agg(
        runs=("run_id", "count"), sensitivity_s=("sensitivity_s", "mean"),
        search_s=("search_s", "mean"), protocol_s=("protocol_s", "mean"),
        total_s=("total_s", "sum"))
    return out.round(3).reset_index()


def top1_by_run(frame: pd.DataFrame) -> dict[str, float]:
    """Test top-1 (percent) of every run, keyed by run_id: the report's DVC metric
    (``results/metrics/report.json``), so `dvc exp show` lists them per experiment."""
    return {str(row.run_id): round(float(row.top1), 4)
            for row in frame.sort_values("run_id").itertuples()}
