"""Tables built from RunRecords alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mpqbench.errors import MpqbenchError
from mpqbench.results import RunRecord, load_runs

SUMMARY_COLUMNS = [
    "run_id", "method", "metric", "solver", "protocol", "model", "dataset_variant",
    "size_mib", "compression_ratio", "bitops_g", "mean_w_bits", "mean_a_bits",
    "fp_top1", "top1", "top5", "drop", "total_s", "profile", "device", "cpu", "git_commit",
]


def summary_table(runs: list[RunRecord]) -> pd.DataFrame:
    """One row a run: identity, cost, accuracy, time and provenance."""
    rows = []
    for run in runs:
        rows.append({
            "run_id": run.run_id, "method": run.method, "metric": run.metric,
            "solver": run.solver, "protocol": run.protocol, "model": run.model,
            "dataset_variant": run.dataset_variant,
            **{k: run.cost.get(k) for k in ("size_mib", "compression_ratio", "bitops_g",
                                            "mean_w_bits", "mean_a_bits")},
            **{k: run.accuracy.get(k) for k in ("fp_top1", "top1", "top5", "drop")},
            "total_s": run.timing.get("total_s"),
            "profile": run.provenance.get("profile"),
            "device": run.provenance.get("device"),
            "cpu": run.provenance.get("cpu"),  # absent in records written before it was kept
            "git_commit": (run.provenance.get("git_commit") or "")[:12],
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""

    def fmt(value) -> str:
        if isinstance(value, float):
            return "" if value != value else floatfmt.format(value)  # NaN: an absent value
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_summary(runs_dir: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """Write ``summary.csv`` and ``summary.md`` for every RunRecord under ``runs_dir``."""
    if not Path(runs_dir).is_dir():
        raise MpqbenchError(f"no RunRecord folder at {runs_dir}; run the pipeline first "
                            f"(`dvc repro`) or pass the folder that holds the records")
    runs = load_runs(runs_dir)
    df = summary_table(runs).sort_values(["model", "method", "run_id"], kind="stable")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "summary.csv", index=False, float_format="%.4f")
    text = f"# mpqbench summary\n\nOne row per RunRecord under `{Path(runs_dir).as_posix()}/`.\n\n"
    text += markdown_table(df) if len(df) else "No RunRecords yet.\n"
    (out_dir / "summary.md").write_text(text)
    return df


def write_plot_data(runs: list[RunRecord], out_dir: str | Path) -> list[Path]:
    """The data files behind ``dvc plots show``: one ``loss/<run_id>.csv`` (step, loss) per
    trained run, from the loss curve its RunRecord keeps. Returns the files written."""
    folder = Path(out_dir) / "loss"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.csv"):
        stale.unlink()
    written = []
    for run in runs:
        curve = (run.extra or {}).get("loss_curve")
        if not curve:
            continue
        frame = pd.DataFrame(curve)[["step", "loss"]].astype({"step": int})
        path = folder / f"{run.run_id}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    return written


BENCHMARKS = ("ilp_solve_time", "quant_throughput", "qat_step_cost", "adaround_depth",
              "ptq_wall_time", "cross_isa", "qat_length", "step_profile_cpu",
              "step_profile_cuda", "paper_grid_cost_cuda")


def benchmark_tables(folder: str | Path, names: tuple[str, ...] = BENCHMARKS
                     ) -> dict[str, pd.DataFrame]:
    """Each benchmark's rows (``results/benchmarks/<name>.json``, written by ``benchmarks/``)
    as a table, keyed by its title and the machine it ran on; absent files are skipped."""
    tables = {}
    for name in names:
        path = Path(folder) / f"{name}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        key = (f"{record['title']} ({record['date']}, {record['cpu']}, "
               f"{record['torch_threads']} threads)")
        tables[key] = pd.DataFrame(record["rows"])
    return tables


def write_metrics(metrics: dict[str, dict[str, float]], folder: str | Path,
                  family_of: dict[str, str] | None = None) -> list[Path]:
    """One small JSON file a run (``[<family>/]<run_id>.json``: its metrics) under ``folder``,
    after removing the files of runs that are gone: the report stage's DVC metrics directory.
    With ``family_of`` (run id -> its stage's method, ``grid`` for the grid's cells) each
    family gets its folder, so ``dvc metrics show folder/<family>`` is one small table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {run_id: folder / (family_of or {}).get(run_id, "") / f"{run_id}.json"
             for run_id in metrics}
    for stale in folder.rglob("*.json"):
        if stale not in paths.values():
            stale.unlink()
    for empty in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(empty.iterdir()):
            empty.rmdir()
    written = []
    for run_id, values in metrics.items():
        path = paths[run_id]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


# what a reader sees instead of a column's key (units in brackets)
COLUMN_LABELS = {
    "top1": "top-1 (%)", "top5": "top-5 (%)", "fp_top1": "FP top-1 (%)", "drop": "drop (points)",
    "size_mib": "weight size (MiB)", "bitops_g": "BitOps (G)", "compression_ratio": "x smaller",
    "mean_w_bits": "mean W bits", "mean_a_bits": "mean A bits", "seconds": "metric cost (s)",
    "search_s": "search (s)", "protocol_s": "protocol (s)", "total_s": "total (s)",
    "spearman": "Spearman rho", "kendall": "Kendall tau", "policies": "policies",
    "within_bar": "within the bar",
}


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a reader gets it: no column or row that is empty everywhere (NaN or None),
    columns under their human labels (``COLUMN_LABELS``)."""
    shown = frame.dropna(axis=1, how="all").dropna(axis=0, how="all")
    return shown.rename(columns={k: v for k, v in COLUMN_LABELS.items() if k in shown.columns})


def as_section(markdown: str) -> str:
    """A generated Markdown page shown inside the report: its own ``# title`` left out, since
    the report's section heading names it already."""
    return markdown.split("\n", 1)[1].lstrip("\n") if markdown.startswith("# ") else markdown


def render_without_code(notebook: str | Path, html: str | Path) -> Path:
    """The executed ``notebook`` as HTML with its code cells and prompts left out: a report
    reads as text, tables and figures (its source is the jupytext file beside it)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    Path(html).write_text(body, encoding="utf-8")
    return Path(html)
