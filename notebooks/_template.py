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
# Copy this file to `notebooks/<method>.py`, add `method_cfg.<method>` and a run key
# `<method>-<model>` to `params.yaml` (see `docs/adding-a-method.md`), and `dvc repro` runs
# it; the report picks up its RunRecords. Replace this cell with what the method computes and
# the paper it comes from. A method is a path through the shared boxes: a sensitivity metric
# (registry `mpqbench.sensitivity.METRICS`), a solver (`mpqbench.search.SOLVERS`) at each
# budget, and a protocol (PTQ here; `mpqbench.qat.qat_policy_run` for QAT-LSQ or QAT-SAQ).

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/template-resnet20"

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from mpqbench.baseline import method_setup
from mpqbench.cost import Budget
from mpqbench.mixed import mixed_ptq_run
from mpqbench.plots import sensitivity_heatmaps
from mpqbench.results import save_run
from mpqbench.sensitivity import calibration_context, compute, metric_options

method = Path(runs_dir).name.removesuffix(f"-{model_name}")  # run keys are <method>-<model>
setup = method_setup(method, model_name, profile, params_file)
settings, cfg, model, splits, device = (setup.settings, setup.cfg, setup.model, setup.splits,
                                        setup.device)
print(f"{method} on {model_name} ({splits.variant}): FP top-1 {setup.fp.top1:.2f}%, "
      f"metric {cfg['metric']}, solver {cfg['solver']}, budgets {cfg['budgets']}")

# %% [markdown]
# ## Sensitivity

# %%
ctx = calibration_context(model, splits, settings, setup.searchable, cfg["bits"], cfg["a_bits"],
                          device)
table = compute(cfg["metric"], ctx, **metric_options(settings, cfg, cfg["metric"]))
sensitivity_heatmaps({cfg["metric"]: table}, setup.searchable)
plt.show()

# %% [markdown]
# ## One policy per budget, through the PTQ protocol, one RunRecord each

# %%
for spec in cfg["budgets"]:
    record, found, _ = mixed_ptq_run(
        model=model, splits=splits, model_name=model_name, settings=settings, device=device,
        fp_top1=setup.fp.top1, table=table, budget=Budget.from_dict(spec), fixed=setup.fixed,
        method=method, rounding=cfg["rounding"], solver=cfg["solver"])
    save_run(record, runs_dir)
    print(f"{record.run_id}: {record.cost['compression_ratio']:.2f}x, "
          f"top-1 {record.accuracy['top1']:.2f}% (drop {record.accuracy['drop']:.2f}), "
          f"search {found.seconds:.3f} s")
