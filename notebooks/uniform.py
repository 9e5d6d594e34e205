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
import pandas as pd
import seaborn as sns

from mpqbench.baseline import load_context
from mpqbench.config import load_params, profile_settings
from mpqbench.evaluate import evaluate
from mpqbench.results import save_run
from mpqbench.uniform import uniform_ptq_run

settings = profile_settings(profile, load_params(params_file))
method_cfg = settings["method_cfg"]["uniform"]
model, checkpoint_meta, splits, device = load_context(model_name, settings)
eval_cfg = settings["eval"]
fp = evaluate(model, splits.test, eval_cfg["batch_size"], device, eval_cfg.get("max_images"),
              desc="FP test")
print(f"{model_name} on {splits.variant}, FP top-1 {fp.top1:.2f}% on {fp.images} test images; "
      f"PTQ settings: {settings['ptq']}")

# %% [markdown]
# ## Runs
# Each RunRecord is saved as soon as its run ends, so an interrupted notebook keeps what it
# finished.

# %%
rows, layer_stats = [], {}
for config in method_cfg["configs"]:
    for rounding in method_cfg["roundings"]:
        record, ptq = uniform_ptq_run(model, splits, model_name, settings, device, fp.top1,
                                      config, rounding)
        save_run(record, runs_dir)
        layer_stats[(config, rounding)] = ptq.layer_stats
        rows.append({"config": config, "rounding": rounding, **record.cost,
                     **record.accuracy, "ptq_s": ptq.seconds["total_s"],
                     "eval_images_per_s": record.timing["eval_images_per_s"]})
results = pd.DataFrame(rows)
results[["config", "rounding", "size_mib", "compression_ratio", "bitops_g", "top1", "top5",
         "drop", "ptq_s", "eval_images_per_s"]].round(3)

# %% [markdown]
# ## Accuracy against size

# %%
fig, ax = plt.subplots(figsize=(7, 4))
sns.lineplot(data=results, x="size_mib", y="top1", hue="rounding", marker="o", ax=ax)
for row in results[results.rounding == results.rounding.iloc[0]].itertuples():
    ax.annotate(row.config, (row.size_mib, row.top1), textcoords="offset points",
                xytext=(4, -12), fontsize=8)
ax.axhline(fp.top1, color="gray", linestyle="--", label=f"FP {fp.top1:.2f}%")
ax.set_xlabel("weight size (MiB)")
ax.set_ylabel("test top-1 (%)")
ax.set_title(f"{model_name}, uniform PTQ ({splits.variant}, profile {profile})")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## AdaRound, layer by layer
# The share of weights AdaRound rounds the other way from nearest, and the layer's output
# reconstruction error at the last step (summed over channels, mean over positions).

# %%
ada = pd.DataFrame([{"config": c, "layer": layer, **stats}
                    for (c, r), per_layer in layer_stats.items() if r == "adaround"
                    for layer, stats in per_layer.items()])
if len(ada):
    fig, ax = plt.subplots(figsize=(9, 3.5))
    sns.barplot(data=ada, x="layer", y="flipped_vs_nearest", hue="config", ax=ax)
    ax.set_ylabel("rounded away from nearest")
    ax.tick_params(axis="x", rotation=90)
    plt.tight_layout()
    plt.show()
