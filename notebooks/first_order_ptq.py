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
# # First-order sensitivity PTQ against Hessian and Fisher baselines
#
# Chauhan, Tiwari, Vikram (ICCV Workshops 2023) claim that a gradient-only layer sensitivity
# allocates bits as well as the Hessian trace (HAWQ-V2) at a fraction of its cost.
# **The metric is a reconstruction** (the paper's text was not available): HAWQ-V2's score
# with the Hessian trace replaced by the empirical Fisher trace, `(F_l / n_l) ||Q_b(W_l) - W_l||^2`,
# `F_l` the mean squared per-sample gradient (see `mpqbench/sensitivity/first_order.py`).
#
# Here the three metrics (first-order, Hessian trace, FIT) are computed on the same
# calibration images, fed to the same ILP at the same size budgets (activations at 8 bits,
# first conv and last linear at W8A8), and every policy goes through the same PTQ protocol.
# Then HAWQ-V3's own setting: bits {4, 8}, budgets between all-4 and all-8.

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/first_order_ptq-resnet20"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from mpqbench.context import build_context
from mpqbench.cost import Budget
from mpqbench.mixed import hawq_v3_sweep, sweep, uniform_references
from mpqbench.plots import accuracy_vs_size, bits_heatmaps, sensitivity_heatmaps
from mpqbench.results import load_runs
from mpqbench.sensitivity import compute, metric_options
from mpqbench.sensitivity.hessian_trace import trace_report
from mpqbench.verdict import allocator_verdicts

ctx = build_context(model_name, profile, params_file, runs_dir=runs_dir)
cfg = ctx.profile.method_cfg("first_order_ptq")
protocol = f"ptq-{cfg['rounding']}"
print(f"{model_name} on {ctx.splits.variant}: FP top-1 {ctx.fp_top1:.2f}% ({ctx.fp.images} test "
      f"images); {len(ctx.searchable)} searchable layers, weight bits {cfg['bits']}, "
      f"A{cfg['a_bits']}")

# %% [markdown]
# ## The three metrics, on the same calibration images

# %%
calibration = ctx.sensitivity_context(cfg["bits"], cfg["a_bits"])
tables = {metric: compute(metric, calibration, **metric_options(ctx.settings, cfg, metric))
          for metric in cfg["metrics"]}
cost = pd.DataFrame({m: t.cost() for m, t in tables.items()}).T
cost["seconds / first_order"] = cost.seconds / cost.loc["first_order", "seconds"]
cost

# %% [markdown]
# Hutchinson's per-layer traces: each layer sampled until its standard error is at most
# `rel_se` of its trace; a trace not significantly above zero is floored at 1.96 standard
# errors (what the scores use) and flagged, a layer that hit the sample cap is flagged.

# %%
trace_report(tables["hessian_trace"].extra)

# %%
sensitivity_heatmaps(tables, ctx.searchable)
plt.show()

# %% [markdown]
# ## Policies at each size budget, through the same PTQ protocol
# Each RunRecord is saved as soon as its run ends.

# %%
budgets = [Budget.from_dict(spec) for spec in cfg["budgets"]]
results = pd.concat([
    sweep(ctx, tables, budgets, protocol, method="first_order_ptq"),
    uniform_references(ctx, budgets, cfg["bits"], cfg["a_bits"], protocol,
                       method="first_order_ptq")])
results[["budget", "metric", "compression_ratio", "size_mib", "mean_w_bits", "top1", "drop",
         "search_s"]].round(3)

# %%
accuracy_vs_size(results, ctx.fp_top1, "metric",
                 f"{model_name}, mixed precision A{cfg['a_bits']}, {protocol}")
plt.show()

# %% [markdown]
# ## Bits per layer

# %%
bits_heatmaps([run for run in load_runs(runs_dir) if run.metric],
              [layer.name for layer in ctx.layers], strip=(f"first_order_ptq-{model_name}-",))
plt.show()

# %% [markdown]
# ## HAWQ-V3's setting: bits {4, 8}, budgets between all-4 and all-8
# Size: weights in {4, 8} at A8; BitOps: W = A in {4, 8}, as in HAWQ-V3.

# %%
v3 = cfg["hawq_v3"]
hawq_v3 = hawq_v3_sweep(ctx, tables[v3["metric"]], v3["bits"], v3["ratios"], v3["kinds"],
                        cfg["a_bits"], protocol)
hawq_v3[["kind", "r", "size_mib", "bitops_g", "mean_w_bits", "mean_a_bits", "top1",
         "drop"]].round(3)

# %% [markdown]
# ## Verdict on the paper's claim
# Chauhan et al.: first-order sensitivity allocates as well as the Hessian trace (HAWQ) and
# the Fisher trace (FIT) at a fraction of the cost. Same budget, rounding and calibration
# images for every allocator; see `mpqbench/verdict.py` for the interval.

# %%
for v in allocator_verdicts(results, "first_order", ["hessian_trace", "fisher_fit"],
                            ctx.fp.images):
    print(v.text())
print(f"sensitivity cost: first_order {cost.loc['first_order', 'seconds']:.1f} s, "
      f"hessian_trace {cost.loc['hessian_trace', 'seconds']:.1f} s")
