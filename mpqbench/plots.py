"""Every figure of the notebooks and the report, and nothing else.

Plotting only: no record is written and no number computed here that a record keeps, so a
compute stage does not depend on this module in ``dvc.yaml`` (``mpqbench.stage_deps``): a
change to a figure re-runs the report, and a method's rendered notebook shows the new figure
after its next run (``dvc repro -f METHOD`` to redraw it now).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from mpqbench.comparison import pareto_front, seed_groups
from mpqbench.results import policy_bits


def sensitivity_heatmaps(tables: dict, layer_order: list[str]):
    """One heatmap a metric: layers x weight bits, colour = log10 of the score."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 0.28 * len(layer_order)
                                                      + 1.5), sharey=True, squeeze=False)
    for ax, (metric, table) in zip(axes[0], tables.items(), strict=True):
        grid = table.frame.pivot_table(index="layer", columns="w_bits", values="score")
        grid = np.log10(grid.loc[layer_order].clip(lower=1e-30))
        sns.heatmap(grid, ax=ax, cmap="viridis", cbar_kws={"label": "log10 score"})
        ax.set_title(metric)
    fig.tight_layout()
    return fig


def accuracy_vs_size(frame: pd.DataFrame, fp_top1: float, hue: str, title: str,
                     label: str | None = None):
    """Test top-1 against weight size (MiB), one line per ``hue`` value; FP as a dashed line.

    ``frame``: columns size_mib, top1, ``hue`` and optionally ``label`` (annotated points).
    """
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
    grid = sns.relplot(data=frame, x="predicted", y="measured_drop", col=table_col,
                       col_wrap=min(3, frame[table_col].nunique()), height=2.8,
                       facet_kws={"sharex": False})
    grid.set_axis_labels("predicted score (sum over layers)", "measured val drop (points)")
    return grid.figure


def accuracy_vs_cost(frame: pd.DataFrame, model: str, x: str = "size_mib"):
    """Test top-1 against ``x`` (size_mib or bitops_g) for every run of ``model``: a marker
    per allocator and protocol, the Pareto front as a line, uniform runs per protocol as
    reference lines, FP dashed, seed spread as error bars."""
    runs = seed_groups(frame[(frame.model == model) & (frame.method != "fp")])
    fig, ax = plt.subplots(figsize=(9, 5))
    uniform = runs[runs.allocator == "uniform"]
    dashes = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    for i, (protocol, part) in enumerate(uniform.groupby("protocol")):
        # the best uniform run at each cost (a protocol may hold several settings per width)
        part = part.groupby(x, as_index=False)["top1"].max().sort_values(x)
        ax.plot(part[x], part["top1"], color="grey", alpha=0.6, linewidth=1.2, marker=".",
                linestyle=dashes[i % len(dashes)], label=f"uniform, {protocol}", zorder=1)
    mixed = runs[runs.allocator != "uniform"]
    if len(mixed):
        sns.scatterplot(data=mixed, x=x, y="top1", hue="allocator", style="protocol", s=60,
                        ax=ax, zorder=3)
    spread = runs[runs.seeds > 1]
    if len(spread):
        ax.errorbar(spread[x], spread["top1"], yerr=spread["top1_std"], fmt="none",
                    ecolor="black", capsize=3, zorder=2)
    if len(runs):
        front = pareto_front(runs, x)
        ax.step(front[x], front["top1"], where="post", color="black", linewidth=1.5,
                label="Pareto front", zorder=2)
    fp = frame[(frame.model == model) & (frame.method == "fp")]
    if len(fp):
        ax.axhline(fp.top1.iloc[0], color="grey", linestyle="--", label="FP")
    label = {"size_mib": "weight size (MiB)", "bitops_g": "BitOps (G)"}.get(x, x)
    ax.set_xlabel(label)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{model}: test top-1 against {label}, every run (PTQ and QAT)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def bits_tables(tables: dict[str, pd.DataFrame]):
    """One heatmap per table (layers x policies, cells: bits), side by side, titled by its
    key (``w_bits`` -> "w bits per layer")."""
    width = max(len(t.columns) for t in tables.values())
    fig, axes = plt.subplots(1, len(tables), figsize=(len(tables) * (0.9 * width + 3), 6),
                             sharey=True, squeeze=False)
    for ax, (key, bits) in zip(axes[0], tables.items(), strict=True):
        sns.heatmap(bits, annot=True, cbar=False, cmap="magma", vmin=2, vmax=8, ax=ax)
        ax.set_title(key.replace("_", " ") + " per layer")
    fig.tight_layout()
    return fig


def bits_heatmaps(runs: list, layer_order: list[str], keys: tuple[str, ...] = ("w_bits",),
                  strip: tuple[str, ...] = ()):
    """Layers x runs, one heatmap per key (``w_bits``, ``a_bits``): each run's bits per layer.
    ``runs``: RunRecords with a policy; ``strip``: substrings removed from the run ids shown."""
    tables = {}
    for key in keys:
        bits = policy_bits(runs, layer_order, key)
        for text in strip:
            bits.columns = [c.replace(text, "") for c in bits.columns]
        tables[key] = bits
    return bits_tables(tables)


def indicator_heatmaps(frame: pd.DataFrame, layer_order: list[str], value: str, title: str,
                       percent: bool = False, cross_out: str | None = None):
    """LIMPQ's indicators, weights (left) and activations (right): layers x widths of column
    ``value`` of ``frame`` (``layer, kind, bits, ...``). ``percent``: a diverging map of 100 x
    the value (relative change); else log10 colour with the values written. ``cross_out``: a
    boolean column whose False cells get a red X (widths the repair left out)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
    for ax, kind in zip(axes, ["weight", "activation"], strict=True):
        part = frame[frame.kind == kind]
        rows = [n for n in layer_order if n in set(part.layer)]
        grid = part.pivot(index="layer", columns="bits", values=value).loc[rows]
        if percent:
            sns.heatmap(100 * grid, annot=True, fmt=".1f", center=0, cmap="coolwarm",
                        cbar=False, ax=ax)
        else:
            sns.heatmap(np.log10(grid), annot=grid.map(lambda v: f"{v:.3g}"), fmt="",
                        cbar=False, cmap="viridis", ax=ax)
        if cross_out is not None:
            keep = part.pivot(index="layer", columns="bits", values=cross_out).loc[rows]
            for i, j in zip(*np.nonzero(~keep.astype(bool).to_numpy()), strict=True):
                ax.text(j + 0.5, i + 0.5, "X", color="red", ha="center", va="center",
                        fontsize=16)
        ax.set_title(f"{kind} {title}")
    fig.tight_layout()
    return fig


def grid_pareto(rows: pd.DataFrame, family: str):
    """The grid's cells of one budget family: mean top-1 with its 95% interval (error bars)
    against the policy's cost, one panel a protocol, one colour an allocator."""
    sub = rows[rows.family == family]
    x = "bitops_g" if family == "bitops" else "size_mib"
    protocols = list(dict.fromkeys(sub.protocol))
    fig, axes = plt.subplots(1, max(len(protocols), 1), figsize=(5 * max(len(protocols), 1), 4),
                             squeeze=False)
    palette = dict(zip(sorted(set(rows.allocator)), sns.color_palette("tab10", 10), strict=False))
    for ax, protocol in zip(axes[0], protocols, strict=False):
        for allocator, group in sub[sub.protocol == protocol].groupby("allocator"):
            spread = [group.top1 - group.low, group.high - group.top1]
            ax.errorbar(group[x], group.top1, yerr=spread, fmt="o", capsize=3, label=allocator,
                        color=palette[allocator])
        ax.set_title(protocol)
        ax.set_xlabel("BitOps (G)" if family == "bitops" else "weight size (MiB)")
        ax.set_ylabel("test top-1 (%)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def training_loss(runs: list) -> plt.Figure:
    """Every trained run's loss curve (the one its RunRecord keeps), one panel a stage's
    method (and the grid), one line a run: the training curves a reader compares."""
    groups: dict[str, list] = {}
    for run in runs:
        if (run.extra or {}).get("loss_curve"):
            groups.setdefault(run.method, []).append(run)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5 * max(len(groups), 1), 3.6),
                             squeeze=False)
    for ax, (method, members) in zip(axes[0], sorted(groups.items()), strict=False):
        for run in sorted(members, key=lambda r: r.run_id):
            curve = pd.DataFrame(run.extra["loss_curve"])
            ax.plot(curve.step, curve.loss, linewidth=0.8, alpha=0.8,
                    label=run.run_id.removeprefix(f"{method}-"))
        ax.set_title(f"{method}: {len(members)} trained runs")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss")
        if len(members) <= 12:
            ax.legend(fontsize=5)
    fig.tight_layout()
    return fig
