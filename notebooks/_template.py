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
# # A new method (template)
#
# Copy this file to `notebooks/<method>.py`, add `method_cfg.<method>` and the method's stage
# to `params.yaml` and `dvc.yaml` (see `docs/adding-a-method.md`); `dvc repro` runs it and the
# report picks up its RunRecords. Replace this cell with what the method computes and the
# paper it comes from. A method is a path through the shared boxes: an allocator (a metric of
# `mpqbench.sensitivity.METRICS` and a solver of `mpqbench.search.SOLVERS`) at each budget,
# and a protocol of `mpqbench.protocols.PROTOCOLS` (`ptq-nearest`, `ptq-adaround`, `qat_lsq`,
# `qat_saq`).

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/template-resnet20"

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from mpqbench.context import build_context
from mpqbench.cost import Budget
from mpqbench.mixed import sweep
from mpqbench.plots import sensitivity_heatmaps
from mpqbench.sensitivity import compute, metric_options

method = Path(runs_dir).name.removesuffix(f"-{model_name}")  # results/runs/<method>-<model>
ctx = build_context(model_name, profile, params_file, runs_dir=runs_dir)
cfg = ctx.profile.method_cfg(method)
table = compute(cfg["metric"], ctx.sensitivity_context(cfg["bits"], cfg["a_bits"]),
                **metric_options(ctx.settings, cfg, cfg["metric"]))
sensitivity_heatmaps({cfg["metric"]: table}, ctx.searchable)
plt.show()

# %% [markdown]
# ## One policy per budget through the protocol, one RunRecord each

# %%
results = sweep(ctx, {cfg["metric"]: table}, [Budget.from_dict(b) for b in cfg["budgets"]],
                cfg["protocol"], method=method, solver=cfg["solver"])
results[["run_id", "compression_ratio", "top1", "drop", "search_s"]].round(3)
