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

from mpqbench.baseline import method_setup
from mpqbench.plots import accuracy_vs_size
from mpqbench.results import save_run
from mpqbench.uniform import uniform_ptq_run

setup = method_setup("uniform", model_name, profile, params_file)
settings, method_cfg, model, splits, device, fp = (setup.settings, setup.cfg, setup.model,
                                                   setup.splits, setup.device, setup.fp)
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
accuracy_vs_size(results, fp.top1, "rounding",
                 f"{model_name}, uniform PTQ ({splits.variant}, profile {profile})", label="config")
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
