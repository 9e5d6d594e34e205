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
# # Uniform post-training quantization baselines
#
# Every searchable layer at the same bit width, through the one PTQ protocol every method
# uses: fold BN, quantize weights per output channel (rounding to nearest, or learned with
# AdaRound, Nagel et al. 2020), calibrate activation ranges on training images, evaluate on
# test. The first conv and the last linear stay at W8A8 and count in the size. These are the
# points a mixed-precision policy has to beat at equal size.

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/uniform-resnet20"

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from mpqbench.context import build_context
from mpqbench.plots import accuracy_vs_size
from mpqbench.uniform import uniform_grid

ctx = build_context(model_name, profile, params_file, runs_dir=runs_dir)
cfg = ctx.profile.method_cfg("uniform")
print(f"{model_name} on {ctx.splits.variant}, FP top-1 {ctx.fp_top1:.2f}% on {ctx.fp.images} "
      f"test images; PTQ settings: {ctx.profile.ptq}")

# %% [markdown]
# ## Runs
# Each RunRecord is saved as soon as its run ends, so an interrupted notebook keeps what it
# finished.

# %%
results, adaround_stats = uniform_grid(ctx, cfg["configs"], cfg["roundings"])
results[["config", "rounding", "size_mib", "compression_ratio", "bitops_g", "top1", "top5",
         "drop", "ptq_s", "eval_images_per_s"]].round(3)

# %% [markdown]
# ## Accuracy against size

# %%
accuracy_vs_size(results, ctx.fp_top1, "rounding",
                 f"{model_name}, uniform PTQ ({ctx.splits.variant}, profile {profile})",
                 label="config")
plt.show()

# %% [markdown]
# ## AdaRound, layer by layer
# The share of weights AdaRound rounds the other way from nearest, and the layer's output
# reconstruction error at the last step (summed over channels, mean over positions).

# %%
if len(adaround_stats):
    fig, ax = plt.subplots(figsize=(9, 3.5))
    sns.barplot(data=adaround_stats, x="layer", y="flipped_vs_nearest", hue="config", ax=ax)
    ax.set_ylabel("rounded away from nearest")
    ax.tick_params(axis="x", rotation=90)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Conclusions, from the records above

# %%
by_config = results.pivot(index="config", columns="rounding", values="top1").loc[cfg["configs"]]
for config, row in by_config.iterrows():
    parts = [f"{rounding} {row[rounding]:.2f}% (drop {ctx.fp_top1 - row[rounding]:.2f})"
             for rounding in cfg["roundings"]]
    gain = (f"; AdaRound {row['adaround'] - row['nearest']:+.2f} points over nearest"
            if {"adaround", "nearest"} <= set(cfg["roundings"]) else "")
    print(f"{config}: " + ", ".join(parts) + gain)
