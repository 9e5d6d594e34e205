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
import pandas as pd
import seaborn as sns

from mpqbench.baseline import method_setup
from mpqbench.cost import parse_wa
from mpqbench.qat import qat_config, qat_policy_run
from mpqbench.quant.policy import validate_policy
from mpqbench.results import find_model_run, save_run
from mpqbench.search import uniform_bits
from mpqbench.verdict import saq_verdicts

setup = method_setup("saq", model_name, profile, params_file)
settings, cfg, model, splits, device = (setup.settings, setup.cfg, setup.model, setup.splits,
                                        setup.device)
layers, fixed, fp = setup.layers, setup.fixed, setup.fp
config = qat_config(settings)
space = cfg["perturb_space"]
print(f"{model_name} on {splits.variant}: FP top-1 {fp.top1:.2f}%; {config.epochs} epoch(s) of "
      f"{config.steps_per_epoch(len(splits.train))} steps, lr {config.lr}, rho {cfg['rho']} "
      f"in the {space} space")


def saq(rho: float, case: int = 3, **more) -> dict:
    """SAQ step options: this notebook's perturbation space, the given rho and case."""
    return {"rho": rho, "case": case, "perturb_space": space, **more}


# a sharper start shows in the loss at the perturbed point: compare loss and loss_at_q below
rows, curves = [], {}


def train_and_save(label: str, bits, protocol: str, step_options=None, **meta):
    record, qat = qat_policy_run(
        protocol=protocol, model=model, splits=splits, model_name=model_name, settings=settings,
        device=device, fp_top1=fp.top1, layers=layers, bits=bits, fixed=fixed, method="saq",
        run_id=f"saq-{model_name}-{label}", config=config, step_options=step_options, **meta)
    save_run(record, runs_dir)
    curves[label] = pd.DataFrame(qat.history["steps"])
    rows.append({"run": label, "protocol": protocol, **record.cost, **record.accuracy,
                 "train_s": qat.seconds, "s_per_step": qat.seconds_per_step(),
                 "passes": qat.step.forward_passes})
    return record


# %% [markdown]
# ## Uniform policies: plain QAT against SAQ (case 3)

# %%
for wa in cfg["configs"]:
    w, a = parse_wa(wa)
    bits = uniform_bits(layers, w, a, fixed)
    train_and_save(f"{wa}-qat_lsq", bits, "qat_lsq", solver="uniform", extra={"config": wa})
    train_and_save(f"{wa}-qat_saq", bits, "qat_saq", saq(cfg["rho"]),
                   solver="uniform", extra={"config": wa, "case": 3})

# %% [markdown]
# ## rho, the three cases, and the efficiency schedule, at one width
# SAQ (case 3) at other values of `rho` (same space as above); then cases 1 and 2 and a
# fresh perturbation every k steps, all at `cases_rho` (compare with the SAQ run at that
# `rho`).

# %%
w, a = parse_wa(cfg["cases_at"])
bits = uniform_bits(layers, w, a, fixed)
for rho in cfg["rho_sweep"]:
    train_and_save(f"{cfg['cases_at']}-qat_saq-rho{rho:g}", bits, "qat_saq",
                   saq(rho), solver="uniform",
                   extra={"config": cfg["cases_at"], "case": 3})
for case in (c for c in cfg["cases"] if c != 3):
    train_and_save(f"{cfg['cases_at']}-qat_saq-case{case}-rho{cfg['cases_rho']:g}", bits,
                   "qat_saq", saq(cfg["cases_rho"], case), solver="uniform",
                   extra={"config": cfg["cases_at"], "case": case})
for every in cfg["every"]:
    train_and_save(f"{cfg['cases_at']}-qat_saq-every{every}-rho{cfg['cases_rho']:g}", bits,
                   "qat_saq", saq(cfg["cases_rho"], every=every),
                   solver="uniform", extra={"config": cfg["cases_at"], "case": 3,
                                            "every": every})

# %% [markdown]
# ## A mixed policy from another method, fine-tuned both ways
# Taken from that method's RunRecord when it exists in `results/` (params:
# `method_cfg.saq.mixed_policy`, where `{model}` stands for this model); skipped otherwise.

# %%
found = find_model_run(cfg.get("mixed_policy"), model_name)
if found is not None:
    mixed = validate_policy(found.policy, [layer.name for layer in layers], found.run_id).bits()
    meta = {"solver": found.solver, "metric": found.metric, "budget": found.budget,
            "extra": {"policy_from": found.run_id}}
    for protocol, options in (("qat_lsq", None),
                              ("qat_saq", saq(cfg["rho_mixed"]))):
        train_and_save(f"mixed-{protocol}", mixed, protocol, options, **meta)
    print(f"mixed policy from {found.run_id}: {found.cost['bitops_g']:.4f} GBitOps")
else:
    print(f"no mixed policy found ({cfg.get('mixed_policy')}, model {model_name}); "
          f"run its method first")

# %% [markdown]
# ## Accuracy and training cost

# %%
results = pd.DataFrame(rows)
plain_step = results.loc[results.protocol == "qat_lsq", "s_per_step"].mean()
results["cost / plain step"] = results["s_per_step"] / plain_step
results[["run", "protocol", "mean_w_bits", "mean_a_bits", "top1", "drop", "train_s",
         "s_per_step", "cost / plain step", "passes"]].round(3)

# %%
uniform = results[results.run.str.match(r"W\d+A\d+-qat_(lsq|saq)$")].copy()
uniform["config"] = uniform.run.str.split("-").str[0]
fig, ax = plt.subplots(figsize=(6, 4))
sns.barplot(data=uniform, x="config", y="top1", hue="protocol", ax=ax)
ax.axhline(fp.top1, color="grey", linestyle="--")
ax.set_ylabel("test top-1 (%)")
ax.set_title(f"{model_name}: plain QAT vs SAQ, same schedule and seed")
plt.show()

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for label, curve in curves.items():
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

# %%
verdicts = saq_verdicts(results, splits_images=fp.images)
for v in verdicts:
    print(v.text())
