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
# # FP baseline
#
# The full-precision model every quantized run is compared with: the published checkpoint,
# adapted to the dataset variant in use by the `checkpoint` stage, evaluated on the test split.
# Its RunRecord gives the `fp_top1` that accuracy drops are measured against.

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/fp_baseline-resnet20"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mpqbench.baseline import fp_baseline_run
from mpqbench.context import build_context
from mpqbench.results import save_run

ctx = build_context(model_name, profile, params_file, evaluate_fp=False)
splits, device, checkpoint_meta = ctx.splits, ctx.device, ctx.checkpoint_meta
print(f"{model_name} on {splits.variant}: {len(splits.train)} train / {len(splits.val)} val / "
      f"{len(splits.test)} test images; device {device}")

# %% [markdown]
# ## How the checkpoint was adapted

# %%
history = pd.DataFrame(checkpoint_meta["history"])
print(f"published weights on {splits.variant} test: "
      f"{checkpoint_meta['published_test']['top1']:.2f}% top-1 "
      f"({checkpoint_meta['published_test']['images']} images)")
print(f"after {checkpoint_meta['finetune']['epochs']} fine-tuning epochs: "
      f"{checkpoint_meta['test']['top1']:.2f}%")
history

# %% [markdown]
# ## Test accuracy

# %%
record, result, per_class = fp_baseline_run(ctx)
pd.Series(result.to_dict()).to_frame("FP model")

# %%
fig, ax = plt.subplots(figsize=(8, 3))
sns.barplot(x=splits.classes, y=per_class.numpy(), ax=ax, color="tab:blue")
ax.set_ylabel("top-1 (%)")
ax.set_title(f"{model_name} FP, per-class test accuracy ({splits.variant})")
ax.tick_params(axis="x", rotation=45)
plt.tight_layout()
plt.show()

# %%
path = save_run(record, runs_dir)
print(f"saved {path}")
