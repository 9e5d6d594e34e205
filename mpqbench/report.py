"""Tables built from RunRecords alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
    runs = load_runs(runs_dir) if Path(runs_dir).is_dir() else []
    df = summary_table(runs).sort_values(["model", "method", "run_id"], kind="stable")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "summary.csv", index=False, float_format="%.4f")
    text = "# mpqbench summary\n\nOne row per RunRecord under `results/runs/`.\n\n"
    text += markdown_table(df) if len(df) else "No RunRecords yet.\n"
    (out_dir / "summary.md").write_text(text)
    return df


def sensitivity_heatmaps(tables: dict, layer_order: list[str]):
    """One heatmap a metric: layers x weight bits, colour = log10 of the score."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 0.28 * len(layer_order)
                                                      + 1.5), sharey=True, squeeze=False)
    for ax, (metric, table) in zip(axes[0], tables.items(), strict=True):
        grid = table.frame.pivot_table(index="layer", columns="w_bits", values="score")
        grid = np.log10(grid.loc[layer_order].clip(lower=1e-30))
        sns.heatmap(grid, ax=ax, cmap="viridis", cbar_kws={"label": "log10 score"})
        ax.set_title(metric)
    fig.tight_layout()
    return fig


def policy_bits(runs: list[RunRecord], layer_order: list[str], key: str = "w_bits"
                ) -> pd.DataFrame:
    """Layers x runs: each run's ``w_bits`` (or ``a_bits``) per layer, columns by run_id."""
    return pd.DataFrame({run.run_id: {name: bits[key] for name, bits in run.policy["layers"]
                                      .items()} for run in runs if run.policy}).loc[layer_order]


def accuracy_vs_size(frame: pd.DataFrame, fp_top1: float, hue: str, title: str,
                     label: str | None = None):
    """Test top-1 against weight size (MiB), one line per ``hue`` value; FP as a dashed line.

    ``frame``: columns size_mib, top1, ``hue`` and optionally ``label`` (annotated points).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=frame, x="size_mib", y="top1", hue=hue, marker="o", ax=ax)
    if label:
        for row in frame.drop_duplicates(label).itertuples():
            ax.annotate(getattr(row, label), (row.size_mib, row.top1), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
    ax.axhline(fp_top1, color="gray", linestyle="--", label=f"FP {fp_top1:.2f}%")
    ax.set_xlabel("weight size (MiB)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(x, labels, classes: list[str], mean, std, per_class: int = 4):
    """``per_class`` images of every class in a grid; ``x`` in the model's input space (N, C, H,
    W), un-normalized with the dataset's ``mean`` / ``std`` for display."""
    import matplotlib.pyplot as plt
    import torch

    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    images = (x * std_t + mean_t).clamp(0, 1)
    fig, axes = plt.subplots(per_class, len(classes), figsize=(1.1 * len(classes),
                                                               1.1 * per_class + 0.4),
                             squeeze=False)
    for c, name in enumerate(classes):
        picks = (labels == c).nonzero().flatten()[:per_class].tolist()
        for r in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if r < len(picks):
                ax.imshow(images[picks[r]].permute(1, 2, 0).numpy())
        axes[0][c].set_title(name, fontsize=8)
    fig.tight_layout()
    return fig


def correlation_scatter(frame: pd.DataFrame, table_col: str = "table"):
    """Predicted score against measured drop, one panel a table; ``frame``: columns
    ``table_col``, predicted, measured_drop."""
    import seaborn as sns

    grid = sns.relplot(data=frame, x="predicted", y="measured_drop", col=table_col,
                       col_wrap=min(3, frame[table_col].nunique()), height=2.8,
                       facet_kws={"sharex": False})
    grid.set_axis_labels("predicted score (sum over layers)", "measured val drop (points)")
    return grid.figure
