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
# # SAQ: sharpness-aware quantization-aware training
#
# Liu, Cai, Zhuang: SAM's perturbation `eps = rho * g / ||g||` combined with quantization.
# Case 3 (SAQ) takes the gradient at the quantized weights and adds `eps` after
# quantization; case 1 takes it at the latent weights and adds it after quantization;
# case 2 perturbs the latent weights before quantizing (rounding swallows small `eps`).
# SAQ is a training protocol, not an allocator: `qat_saq` against `qat_lsq` (plain SGD QAT)
# with the same data, schedule, seed and LSQ quantizer; only the training step differs.
# The first conv and the classifier are W8A8 (method card 6), their steps frozen at their
# calibrated values. `rho` is in the authors' units (`perturb_space: weight_standardized`:
# each layer's weight ascent taken in its per-channel standardized units, as in the
# authors' weight-standardized models), quantizer steps are not perturbed, and BN running
# statistics move in both passes, as in ziplab/SAQ.

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/saq-resnet20"

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from mpqbench.context import build_context
from mpqbench.saq import saq_grid
from mpqbench.verdict import saq_verdicts

ctx = build_context(model_name, profile, params_file, runs_dir=runs_dir)
cfg = ctx.profile.method_cfg("saq")
config = ctx.profile.qat()
print(f"{model_name} on {ctx.splits.variant}: FP top-1 {ctx.fp_top1:.2f}%; {config.epochs} "
      f"epoch(s) of {config.steps_per_epoch(len(ctx.splits.train))} steps, lr {config.lr}, rho "
      f"{cfg['rho']} in the {cfg['perturb_space']} space")

# %% [markdown]
# ## The runs
# Uniform policies with plain QAT and with SAQ (case 3); at `cases_at`, SAQ at the other
# values of `rho` (`rho_sweep`), cases 1 and 2 and a fresh perturbation every k steps, all at
# `cases_rho` (compare with the SAQ run at that `rho`); and a mixed policy from another
# method's RunRecord (`mixed_policy`: method, budget, protocol), fine-tuned both ways when
# that method has run. Each RunRecord is saved as soon as its run ends.

# %%
runs, mixed_from = saq_grid(ctx, cfg, config)
print(f"mixed policy from {mixed_from.run_id}: {mixed_from.cost['bitops_g']:.4f} GBitOps"
      if mixed_from else f"no mixed policy ({cfg['mixed_policy']}): run its method first")

# %% [markdown]
# ## Accuracy and training cost

# %%
results = runs.results
results[["run", "protocol", "mean_w_bits", "mean_a_bits", "top1", "drop", "train_s",
         "s_per_step", "cost / plain step", "passes"]].round(3)

# %%
uniform = results[results.run.str.match(r"W\d+A\d+-qat_(lsq|saq)$")].copy()
uniform["config"] = uniform.run.str.split("-").str[0]
fig, ax = plt.subplots(figsize=(6, 4))
sns.barplot(data=uniform, x="config", y="top1", hue="protocol", ax=ax)
ax.axhline(ctx.fp_top1, color="grey", linestyle="--")
ax.set_ylabel("test top-1 (%)")
ax.set_title(f"{model_name}: plain QAT vs SAQ, same schedule and seed")
plt.show()

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for label, curve in runs.curves.items():
    if label.startswith(cfg["cases_at"]):
        # SAQ's loss at Q(w), before the perturbation, is the one comparable to plain QAT's
        loss = curve["loss_at_q"] if "loss_at_q" in curve else curve["loss"]
        ax.plot(curve["step"], loss.rolling(10, min_periods=1).mean(), label=label)
ax.set_xlabel("step")
ax.set_ylabel("training loss at Q(w) (10-step mean)")
ax.set_title(f"loss curves at {cfg['cases_at']}")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Verdict on the paper's claim
# SAQ claims better accuracy than plain QAT at the same width and schedule. Each verdict
# compares the two runs on the same test images; see `mpqbench/verdict.py` for the interval.
# Each side is one training run, and training noise is larger than that interval, so every
# outcome here reads "inconclusive (one training seed)"; a judgement needs 2 or more seeds
# (the grid's `qat_saq` cells on the `paper` profile, `results/leaderboard.md`).

# %%
verdicts = saq_verdicts(results, splits_images=ctx.fp.images)
for v in verdicts:
    print(v.text())
