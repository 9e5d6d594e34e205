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
# # LIMPQ: learned importance indicators and a one-time ILP
#
# Tang et al. (ECCV 2022): train one network whose searchable layers hold an LSQ step per
# candidate bit width (weights and activations, plus a BatchNorm per width), all widths
# jointly on every batch; the learned steps are the layers' importance indicators. One ILP
# over (weight, activation) bit pairs, `sum_l I_a(b_a) + alpha * I_w(b_w)`, then picks a
# policy per budget in a fraction of a second, and each policy is fine-tuned with plain LSQ
# QAT (`qat_lsq`). Uniform W3A3 and W4A4 go through the same fine-tuning schedule.
# Implemented from the authors' released code (method card 5); the first conv and the
# classifier are full precision during indicator training and W8A8 in every policy.

# %% tags=["parameters"]
model_name = "resnet20"
profile = "smoke"
params_file = "params.yaml"
runs_dir = "results/runs/limpq-resnet20"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mpqbench.baseline import method_setup
from mpqbench.cost import Budget, parse_wa
from mpqbench.limpq import (
    indicator_config,
    indicator_records,
    indicator_table,
    indicators,
    repair,
    train_indicators,
)
from mpqbench.mixed import budget_label
from mpqbench.qat import loss_curve, qat_config, qat_policy_run
from mpqbench.results import load_runs, policy_bits, save_run
from mpqbench.search import search, uniform_bits
from mpqbench.verdict import limpq_verdicts

setup = method_setup("limpq", model_name, profile, params_file)
settings, cfg, model, splits, device = (setup.settings, setup.cfg, setup.model, setup.splits,
                                        setup.device)
layers, fixed, searchable, fp = setup.layers, setup.fixed, setup.searchable, setup.fp
candidates = cfg["candidates"]
# the profile's QAT schedule, then LIMPQ's overrides for this profile (params.yaml)
finetune = qat_config(settings, cfg.get("finetune", {}).get(settings["profile"]))
print(f"{model_name} on {splits.variant}: FP top-1 {fp.top1:.2f}%; {len(searchable)} "
      f"searchable layers, candidates {candidates}; fine-tune {finetune.epochs} epoch(s) of "
      f"{finetune.steps_per_epoch(len(splits.train))} steps")

# %% [markdown]
# ## Joint indicator training
# Every step: each width `b` (widest first) with all searchable layers at `WbAb`, then one
# random mixed setting; gradients accumulate, are clipped by value to 1, one SGD step.

# %%
indicator_cfg = indicator_config(settings)
trained = train_indicators(model, splits.train, splits.input_shape, searchable, candidates,
                           indicator_cfg, device, resume_path=f".resume/limpq-{model_name}.pt")
curve = pd.DataFrame(trained.history["steps"])
per_step = curve["seconds"].mean()
print(f"indicator training: {len(curve)} steps, {trained.seconds:.1f} s, {per_step:.3f} s a "
      f"step ({trained.passes_per_step} passes)")
fig, ax = plt.subplots(figsize=(8, 3.5))
curve.set_index("step")[[c for c in curve.columns if c.startswith("W") or c == "mixed"]].plot(
    ax=ax, logy=True)
ax.set_ylabel("training loss")
ax.set_title("joint indicator training: loss per width")
plt.show()

# %% [markdown]
# ## How far training moved each indicator from its init
# The learned steps are the indicators only if training moved them: relative change
# (trained / init - 1) per layer and width. Steps that reached the authors' clamp
# `[1e-5, 1]` (no gradient there) are listed.

# %%
movement = trained.movement(searchable)
fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
for ax, kind in zip(axes, ["weight", "activation"], strict=True):
    part = movement[movement.kind == kind]
    grid = part.pivot(index="layer", columns="bits", values="moved").loc[
        [n for n in searchable if n in set(part.layer)]]
    sns.heatmap(100 * grid, annot=True, fmt=".1f", center=0, cmap="coolwarm", cbar=False, ax=ax)
    ax.set_title(f"{kind} indicator: change from init (%)")
plt.tight_layout()
plt.show()
moved = movement.groupby("kind")["moved"].apply(lambda m: m.abs().median())
dead = trained.history.get("dead_steps", {})
print("median |change| from init: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in
                                                  moved.items()))
print(f"steps at the clamp during training: {len(dead)}" +
      (f" ({', '.join(sorted(dead)[:6])}{' ...' if len(dead) > 6 else ''})" if dead else ""))

# %% [markdown]
# ## The indicators per layer and width, and the monotonicity repair
# A narrower width should have a larger step; a width whose step is below the next wider
# one's is unreliable and left out of the search (crossed out below).

# %%
frame = repair(indicators(trained.model, searchable))
fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharey=True)
for ax, kind in zip(axes, ["weight", "activation"], strict=True):
    part = frame[frame.kind == kind]
    grid = part.pivot(index="layer", columns="bits", values="indicator").loc[
        [n for n in searchable if n in set(part.layer)]]
    mask = ~part.pivot(index="layer", columns="bits", values="usable").loc[grid.index].astype(bool)
    sns.heatmap(np.log10(grid), annot=grid.map(lambda v: f"{v:.3g}"), fmt="", cbar=False,
                cmap="viridis", ax=ax)
    for (i, j) in zip(*np.nonzero(mask.to_numpy()), strict=True):
        ax.text(j + 0.5, i + 0.5, "X", color="red", ha="center", va="center", fontsize=16)
    ax.set_title(f"{kind} indicator (learned step), log10 colour")
plt.tight_layout()
plt.show()
repaired = int((~frame.usable).sum())
print(f"repaired (unusable) widths: {repaired} of {len(frame)}")

# %% [markdown]
# ## One-time ILP over (w, a) pairs at each budget, then LSQ fine-tuning

# %%
table = indicator_table(frame, cfg["alpha"], trained.seconds,
                        len(curve) * indicator_cfg.batch_size, trained.passes_per_step)
rows = []
for spec in cfg["budgets"]:
    budget = Budget.from_dict(spec)
    found = search("ilp", table.frame, layers, budget, fixed)
    label = budget_label(budget)
    record, _ = qat_policy_run(
        protocol="qat_lsq", model=model, splits=splits, model_name=model_name, settings=settings,
        device=device, fp_top1=fp.top1, layers=layers, bits=found.bits, fixed=fixed,
        method="limpq", run_id=f"limpq-{model_name}-{label}-qat_lsq", config=finetune,
        metric="limpq_indicator", solver="ilp", budget=budget.describe(),
        bit_candidates=candidates,
        timing={"sensitivity_s": trained.seconds, "search_s": found.seconds},
        extra={"solver_status": found.status, "objective": found.objective,
               "totals": found.totals, "alpha": cfg["alpha"],
               "indicator_steps": len(curve), "indicator_s_per_step": per_step,
               "indicator_loss_curve": loss_curve(trained.history),
               "indicators": indicator_records(frame), "repaired_widths": repaired,
               "indicator_median_change": {k: float(v) for k, v in moved.items()},
               "indicator_init": indicator_records(repair(trained.initial)),
               "indicator_steps_at_clamp": dead})
    save_run(record, runs_dir)
    rows.append({"policy": f"LIMPQ {label}", **record.cost, **record.accuracy,
                 "search_s": found.seconds})
for config in cfg["uniform"]:
    w, a = parse_wa(config)
    record, _ = qat_policy_run(
        protocol="qat_lsq", model=model, splits=splits, model_name=model_name, settings=settings,
        device=device, fp_top1=fp.top1, layers=layers, bits=uniform_bits(layers, w, a, fixed),
        fixed=fixed, method="limpq", run_id=f"limpq-{model_name}-uniform-{config}-qat_lsq",
        config=finetune, solver="uniform", bit_candidates=candidates,
        extra={"config": config})
    save_run(record, runs_dir)
    rows.append({"policy": f"uniform {config}", **record.cost, **record.accuracy,
                 "search_s": 0.0})
results = pd.DataFrame(rows)
results[["policy", "bitops_g", "compression_ratio", "mean_w_bits", "mean_a_bits", "top1",
         "drop", "search_s"]].round(4)

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
sns.scatterplot(data=results, x="bitops_g", y="top1", hue="policy", style="policy", s=90, ax=ax)
ax.axhline(fp.top1, color="grey", linestyle="--", label="FP")
ax.set_xlabel("BitOps (G)")
ax.set_ylabel("test top-1 (%)")
ax.set_title(f"{model_name}: LIMPQ policies and uniform, all QAT-LSQ, same schedule")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Chosen bits per layer

# %%
saved = [run for run in load_runs(runs_dir) if run.solver == "ilp"]
order = [layer.name for layer in layers]
fig, axes = plt.subplots(1, 2, figsize=(2 * (0.9 * len(saved) + 3), 6), sharey=True)
for ax, key in zip(axes, ["w_bits", "a_bits"], strict=True):
    bits = policy_bits(saved, order, key)
    bits.columns = [c.replace(f"limpq-{model_name}-", "").replace("-qat_lsq", "")
                    for c in bits.columns]
    sns.heatmap(bits, annot=True, cbar=False, cmap="magma", vmin=2, vmax=8, ax=ax)
    ax.set_title(key.replace("_", " ") + " per layer")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Verdict on the paper's claim
# LIMPQ claims that its mixed policy beats the uniform policy of the same BitOps after the
# same fine-tuning. Same schedule and seed for both sides; see `mpqbench/verdict.py`.

# %%
for v in limpq_verdicts(results, fp.images):
    print(v.text())
