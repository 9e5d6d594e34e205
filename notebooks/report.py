# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # mpqbench: the comparison report
#
# Built from the RunRecords under `results/runs/` alone (every number below is a field of one
# of them; `results/summary.csv` lists them all with their git commit). PTQ and QAT runs are
# marked by their protocol and never averaged together. Accuracy is test top-1 on the
# dataset variant named in each record; drops are against the FP model of the same records.

# %% tags=["parameters"]
runs_dir = "results/runs"
grid_dir = "results/grid"
out_dir = "results"
benchmarks_dir = "results/benchmarks"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mpqbench.comparison import (
    allocator_protocol_matrix,
    bits_at_budget,
    method_costs,
    metric_quality,
    paper_vs_reproduced,
    run_frame,
    run_metrics,
    shared_budgets,
)
from mpqbench.conclusions import write_conclusions, write_glance
from mpqbench.leaderboard import grid_frame_rows, load_grid, write_leaderboard
from mpqbench.plots import accuracy_vs_cost, bits_tables, grid_pareto, training_loss
from mpqbench.report import (
    as_section,
    benchmark_tables,
    readable,
    write_metrics,
    write_plot_data,
    write_summary,
)
from mpqbench.results import load_runs

runs = load_runs(runs_dir) if Path(runs_dir).is_dir() else []
frame = run_frame(runs)
grid_records = load_runs(Path(grid_dir) / "runs") if (Path(grid_dir) / "runs").is_dir() else []
write_summary(runs_dir, out_dir)
write_plot_data(runs, Path(out_dir) / "plots")  # the training-loss curves as data
# `dvc metrics show results/metrics/runs/<family>`: one small table a stage's method
write_metrics(run_metrics(run_frame(runs + grid_records)), Path(out_dir) / "metrics" / "runs",
              {r.run_id: r.method for r in runs + grid_records})
figures = Path(out_dir) / "figures"
figures.mkdir(parents=True, exist_ok=True)
print(f"{len(runs)} RunRecords; methods: {sorted(set(frame.method)) if len(frame) else []}; "
      f"profiles: {sorted(set(frame.profile)) if len(frame) else []}")

# %% [markdown]
# ## At a glance: each paper's claim, its verdict and the numbers
# One row a claim (the README's table): both top-1 values (%), the difference in points with
# its 95% interval, and the verdict; the sections below give the grid, the figures and the
# costs behind them.

# %%
display(Markdown(write_glance(runs, Path(out_dir) / "glance.md")))  # the README's table

# %% [markdown]
# ## The leaderboard: every allocator through every protocol at the shared budgets
# From the comparison grid (`results/grid/`, stages `allocate@` and `evaluate@`): per budget,
# allocators as rows and protocols as columns, mean top-1 with its 95% interval over seeds,
# the allocator's own seconds, and paired differences against uniform and the best other
# allocator. Also written to `results/leaderboard.md` (the README's copy: `python -m mpqbench
# report --readme README.md`).

# %%
grid = load_grid(grid_dir)
display(Markdown(as_section(write_leaderboard(Path(out_dir) / "leaderboard.md", grid))))

# %% [markdown]
# ### The grid's cells against their cost, with intervals, and the bits they chose

# %%
grid_rows = pd.DataFrame(grid_frame_rows(grid))
for family in sorted(set(grid_rows.family)) if len(grid_rows) else []:
    fig = grid_pareto(grid_rows, family)
    fig.savefig(figures / f"grid-{family}.png", dpi=120, bbox_inches="tight")
    plt.show()
grid_runs = run_frame(grid_records) if grid_records else None
for budget in grid.budgets if grid_runs is not None and len(grid_runs) else []:
    tables = {key: bits_at_budget(grid_runs, budget, key) for key in ("w_bits", "a_bits")}
    if tables["w_bits"].empty:  # no searched policy ran at this budget (uniform only, or none)
        continue
    fig = bits_tables(tables)
    fig.suptitle(f"the grid's policies at {budget}: bits per layer", y=1.02)
    fig.savefig(figures / f"grid-bits-{budget}.png", dpi=120, bbox_inches="tight")
    plt.show()

# %% [markdown]
# ## Conclusions: each paper's claim on this setting
# Generated from the records (`mpqbench/conclusions.py`), also written to
# `results/conclusions.md`, which the README links to.

# %%
display(Markdown(as_section(write_conclusions(runs, Path(out_dir) / "conclusions.md"))))

# %% [markdown]
# ## Training curves
# The loss of every trained run (QAT, LIMPQ's fine-tuning, the grid's QAT cells), one panel a
# method; also what `dvc plots show` displays.

# %%
fig = training_loss(runs + grid_records)
fig.savefig(figures / "training-loss.png", dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Accuracy against size and BitOps
# One plot per model and cost; markers: allocator (colour) and protocol (shape); black: the
# Pareto front over every run; grey lines: uniform policies per protocol.

# %%
for model in sorted(set(frame.model)) if len(frame) else []:
    for x in ("size_mib", "bitops_g"):
        fig = accuracy_vs_cost(frame, model, x)
        fig.savefig(figures / f"accuracy_vs_{x}-{model}.png", dpi=120, bbox_inches="tight")
        plt.show()

# %% [markdown]
# ## Allocator x protocol
# Test top-1 of every policy (rows: model, budget, allocator) under every recipe it went
# through (columns: the protocol, and for QAT its steps and step options), one table per
# budget family. A cell is the mean over the seeds of one configuration, never over
# different settings; where a pivot would be mostly empty, the cells are listed instead.

# %%
for family, table in allocator_protocol_matrix(frame).items():
    display(Markdown(f"**{family} budgets**"), readable(table))

# %% [markdown]
# ## Bits per layer at each budget two or more allocators share
# Weight bits (left) and activation bits (right) of every searched policy at that budget.

# %%
for budget in shared_budgets(frame):
    fig = bits_tables({key: bits_at_budget(frame, budget, key) for key in ("w_bits", "a_bits")})
    fig.suptitle(f"bits per layer at {budget}", y=1.02)
    fig.savefig(figures / f"bits-{budget}.png", dpi=120, bbox_inches="tight")
    plt.show()

# %% [markdown]
# ## Metric quality
# Rank correlation of each sensitivity table's predicted score with the measured validation
# drop of the same random policies (the policy bank), and the table's cost where known.

# %%
readable(metric_quality(frame))

# %% [markdown]
# ## Paper against reproduced
# Each method's published headline next to the comparable run here. Models, datasets and FP
# baselines differ (named in each row); the drop is the comparable quantity where the
# source gives it.

# %%
readable(paper_vs_reproduced(frame))

# %% [markdown]
# ## Cost of each method
# Mean wall seconds per run of sensitivity, search and protocol (PTQ or training), and the
# summed seconds of all a method's runs, on the device each record names.

# %%
readable(method_costs(frame))

# %% [markdown]
# ## Cost of the suite's own parts
# The figures `benchmarks/` measured side by side in one run each (solver time, evaluation
# throughput of fake-quantized models, QAT step cost, AdaRound against depth), read from
# `results/benchmarks/*.json`; the machine is named under each table.

# %%
for title, table in benchmark_tables(benchmarks_dir).items():
    display(Markdown(f"**{title}**"), readable(table))
