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
import seaborn as sns

from mpqbench.baseline import method_setup
from mpqbench.cost import Budget
from mpqbench.mixed import budget_label, interpolated_budget, mixed_ptq_run, uniform_reference_run
from mpqbench.plots import accuracy_vs_size, sensitivity_heatmaps
from mpqbench.results import load_runs, policy_bits, save_run
from mpqbench.sensitivity import calibration_context, compute, metric_options, restrict_table
from mpqbench.sensitivity.hessian_trace import trace_report
from mpqbench.verdict import allocator_verdicts

setup = method_setup("first_order_ptq", model_name, profile, params_file)
settings, cfg, model, splits, device = (setup.settings, setup.cfg, setup.model, setup.splits,
                                        setup.device)
layers, fixed, searchable, fp = setup.layers, setup.fixed, setup.searchable, setup.fp
print(f"{model_name} on {splits.variant}: FP top-1 {fp.top1:.2f}% ({fp.images} test images); "
      f"{len(searchable)} searchable layers, weight bits {cfg['bits']}, A{cfg['a_bits']}")

# %% [markdown]
# ## The three metrics, on the same calibration images

# %%
ctx = calibration_context(model, splits, settings, searchable, cfg["bits"], cfg["a_bits"], device)
tables = {metric: compute(metric, ctx, **metric_options(settings, cfg, metric))
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
sensitivity_heatmaps(tables, searchable)
plt.show()

# %% [markdown]
# ## Policies at each size budget, through the same PTQ protocol
# Each RunRecord is saved as soon as its run ends.

# %%
rows, uniform_done = [], set()
for spec in cfg["budgets"]:
    budget = Budget.from_dict(spec)
    for metric, table in tables.items():
        record, result, _ = mixed_ptq_run(
            model=model, splits=splits, model_name=model_name, settings=settings, device=device,
            fp_top1=fp.top1, table=table, budget=budget, fixed=fixed, method="first_order_ptq",
            rounding=cfg["rounding"])
        save_run(record, runs_dir)
        rows.append({"budget": budget_label(budget), "metric": metric,
                     **record.cost, **record.accuracy, "search_s": result.seconds})
    record = uniform_reference_run(
        model=model, splits=splits, model_name=model_name, settings=settings, device=device,
        fp_top1=fp.top1, layers=layers, budget=budget, w_choices=cfg["bits"],
        a_bits=cfg["a_bits"], fixed=fixed, rounding=cfg["rounding"], method="first_order_ptq",
        done=uniform_done)
    if record is not None:
        save_run(record, runs_dir)
        rows.append({"budget": "uniform", "metric": f"uniform {record.extra['config']}",
                     **record.cost, **record.accuracy, "search_s": 0.0})
results = pd.DataFrame(rows)
results[["budget", "metric", "compression_ratio", "size_mib", "mean_w_bits", "top1", "drop",
         "search_s"]].round(3)

# %%
accuracy_vs_size(results, fp.top1, "metric",
                 f"{model_name}, mixed precision A{cfg['a_bits']}, PTQ-{cfg['rounding']}")
plt.show()

# %% [markdown]
# ## Bits per layer

# %%
saved = [run for run in load_runs(runs_dir) if run.metric]
policies = policy_bits(saved, [layer.name for layer in layers])
policies.columns = [c.replace(f"first_order_ptq-{model_name}-", "") for c in policies.columns]
fig, ax = plt.subplots(figsize=(0.9 * len(policies.columns) + 3, 6))
sns.heatmap(policies, annot=True, cbar=False, cmap="magma", ax=ax)
ax.set_title("weight bits per layer")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## HAWQ-V3's setting: bits {4, 8}, budgets between all-4 and all-8

# %%
v3 = cfg["hawq_v3"]
v3_rows = []
for kind in v3["kinds"]:
    # size: weights in {4, 8} at A8; BitOps: W=A in {4, 8}, as in HAWQ-V3
    v3_table = restrict_table(tables[v3["metric"]], v3["bits"],
                              cfg["a_bits"] if kind == "size" else None)
    for r in v3["ratios"]:
        budget = interpolated_budget(layers, fixed, r, kind, min(v3["bits"]), max(v3["bits"]),
                                     cfg["a_bits"])
        record, result, _ = mixed_ptq_run(
            model=model, splits=splits, model_name=model_name, settings=settings, device=device,
            fp_top1=fp.top1, table=v3_table, budget=budget, fixed=fixed,
            method="hawq_v3", rounding=cfg["rounding"],
            run_id=f"hawq_v3-{model_name}-{kind}-r{r:g}-{cfg['rounding']}",
            extra={"hawq_v3": {"kind": kind, "r": r}})
        save_run(record, runs_dir)
        v3_rows.append({"kind": kind, "r": r, **record.cost, **record.accuracy})
pd.DataFrame(v3_rows)[["kind", "r", "size_mib", "bitops_g", "mean_w_bits", "mean_a_bits", "top1",
                       "drop"]].round(3)

# %% [markdown]
# ## Verdict on the paper's claim
# Chauhan et al.: first-order sensitivity allocates as well as the Hessian trace (HAWQ) and
# the Fisher trace (FIT) at a fraction of the cost. Same budget, rounding and calibration
# images for every allocator; see `mpqbench/verdict.py` for the interval.

# %%
for v in allocator_verdicts(results, "first_order", ["hessian_trace", "fisher_fit"], fp.images):
    print(v.text())
print(f"sensitivity cost: first_order {cost.loc['first_order', 'seconds']:.1f} s, "
      f"hessian_trace {cost.loc['hessian_trace', 'seconds']:.1f} s")
