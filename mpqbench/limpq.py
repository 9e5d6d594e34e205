"""LIMPQ: learned layer-wise importance indicators and a one-time ILP (Tang et al., ECCV 2022).

1. ``train_indicators``: a multi-bit copy of the FP model (``quant.multibit``) trained with
   the joint step (``train.JointIndicatorStep``): every uniform width and one random mixed
   setting per batch.
2. ``indicators``: the learned steps, ``I_w^l(b) = s_w^l[b]`` and ``I_a^l(b) = s_a^l[b]``.
3. ``repair``: a width whose indicator is below the next wider one's is not trusted.
4. ``indicator_table``: the ILP's scores over (w_bits, a_bits) pairs,
   ``I_a^l(b_a) + alpha * I_w^l(b_w)`` (the paper's ``alpha = 2``), searched once per budget
   with ``search.search("ilp", ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn

from mpqbench.context import Context, Profile
from mpqbench.cost import IMAGE_INPUT_BITS, Budget
from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.naming import budget_label, run_id
from mpqbench.protocols import run_policy, search_allocation, uniform_allocation
from mpqbench.qat import fingerprint, loss_curve
from mpqbench.quant.modules import MultiBitLsqQuantizer
from mpqbench.quant.multibit import multibit_model
from mpqbench.sensitivity.base import SensitivityTable
from mpqbench.train import JointIndicatorStep, QatConfig, qat_train

FINETUNE_PROTOCOL = "qat_lsq"  # the authors fine-tune every searched policy with plain LSQ


@dataclass
class IndicatorTraining:
    """The trained multi-bit model, its loss history, its training steps' summed seconds and
    the indicators at their init (``initial``, the ``indicators`` frame before training)."""

    model: nn.Module
    history: dict
    seconds: float
    passes_per_step: int
    initial: pd.DataFrame

    def movement(self, searchable: list[str]) -> pd.DataFrame:
        """Per indicator: its init, its trained value and ``moved`` = trained / init - 1 (how
        far training took it from its init, relative)."""
        trained = indicators(self.model, searchable)
        keys = ["layer", "kind", "bits"]
        out = trained.merge(self.initial.rename(columns={"indicator": "init"}), on=keys)
        out["moved"] = out["indicator"] / out["init"] - 1.0
        return out


def indicator_config(profile: Profile) -> QatConfig:
    """The indicator-training schedule: the profile's ``qat`` settings, then
    ``method_cfg.limpq.indicator_training`` (optimizer), then ``profiles.<p>.limpq_indicators``
    (length)."""
    cfg = profile.method_cfg("limpq")
    if "indicator_training" not in cfg:
        raise MpqbenchError("params.yaml has no method_cfg.limpq.indicator_training; see the "
                            "repository's params.yaml")
    if "limpq_indicators" not in profile.settings:
        raise MpqbenchError(f"profile {profile.name!r} has no 'limpq_indicators' "
                            "(epochs, max_batches_per_epoch, batch_size); add it to params.yaml")
    return profile.qat({**cfg["indicator_training"], **profile.settings["limpq_indicators"]})


def indicator_records(frame: pd.DataFrame) -> list[dict]:
    """The repaired indicator frame as JSON-ready rows (for RunRecords)."""
    return [{"layer": r.layer, "kind": r.kind, "bits": int(r.bits),
             "indicator": round(float(r.indicator), 7), "usable": bool(r.usable),
             **({"at_bound": bool(r.at_bound)} if hasattr(r, "at_bound") else {})}
            for r in frame.itertuples()]


def train_indicators(
    fp_model: nn.Module, train: Split, input_shape: tuple[int, ...], searchable: list[str],
    candidates: list[int], config: QatConfig, device: torch.device | str = "cpu",
    resume_path: str | None = None,
) -> IndicatorTraining:
    """Joint training of every candidate width's steps (and per-width BNs); see the module doc.

    The FP model is left untouched. The first conv and classifier (not in ``searchable``) run
    in full precision during this phase, as in the authors' code.
    """
    model = multibit_model(fp_model, input_shape, searchable, candidates).to(device)
    step = JointIndicatorStep(searchable, candidates, seed=config.seed)
    # every width's input step set from the first training batch (what the first training
    # pass would do), so that the indicators' starting values can be recorded
    first, _ = next(iter(train.batches(config.batch_size, shuffle=True, augment=True,
                                       seed=config.seed)))
    step.prime(model, first.to(device))
    initial = indicators(model, searchable)
    history = qat_train(model, train, config, step, device, resume_path, desc="LIMPQ indicators",
                        resume_tag=fingerprint(fp_model, searchable, candidates),
                        record_dead_steps=True)
    seconds = sum(s["seconds"] for s in history["steps"])  # summed over resumed sessions too
    return IndicatorTraining(model, history, seconds, step.passes_per_step, initial)


def indicators(model: nn.Module, searchable: list[str]) -> pd.DataFrame:
    """Columns layer, bits, kind (``weight`` / ``activation``), indicator (the learned step).

    A layer whose input is not quantized (fed by the image) has no activation rows.
    """
    rows = []
    for name in searchable:
        layer = model.get_submodule(name)
        for kind, quantizer in (("weight", layer.weight_quantizer),
                                ("activation", layer.input_quantizer)):
            if quantizer is None:
                continue
            if not isinstance(quantizer, MultiBitLsqQuantizer):
                raise MpqbenchError(f"layer {name} has no multi-bit {kind} quantizer; train "
                                    "the indicators on a model from multibit_model")
            rows += [{"layer": name, "bits": b, "kind": kind,
                      "indicator": float(quantizer.step(b).detach()),
                      "at_bound": quantizer.per_bits[str(b)].at_bound()}
                     for b in quantizer.candidates]
    return pd.DataFrame(rows, columns=["layer", "bits", "kind", "indicator", "at_bound"])


def repair(frame: pd.DataFrame) -> pd.DataFrame:
    """Add a ``usable`` column: False where ``I(b_prev) < I(b)`` for the next wider ``b``.

    A narrower width must have a larger step; when it does not, its indicator is unreliable
    and the search must never pick it (the authors set it to a huge value; rows marked
    unusable are left out of the ILP instead, which picks the same policy whenever one
    without them fits the budget, and otherwise reports the budget as infeasible rather than
    choosing an unreliable width). Each comparison uses the learned values.
    """
    out = frame.sort_values(["layer", "kind", "bits"]).reset_index(drop=True)
    out["usable"] = True
    for _, group in out.groupby(["layer", "kind"], sort=False):
        values = group["indicator"].to_numpy()
        for i in range(1, len(values)):
            if values[i - 1] < values[i]:
                out.loc[group.index[i - 1], "usable"] = False
    return out


def indicator_table(frame: pd.DataFrame, alpha: float = 2.0, seconds: float = 0.0,
                    images: int = 0, passes: int = 0) -> SensitivityTable:
    """Scores over (w_bits, a_bits): ``I_a(b_a) + alpha * I_w(b_w)``, usable widths only.

    ``frame`` from ``repair``; ``seconds`` / ``images`` / ``passes``: the indicator training's
    cost (recorded in the table). A layer without activation rows gets ``a_bits = 8``.
    """
    if "usable" not in frame.columns:
        frame = repair(frame)
    rows = []
    for layer, group in frame[frame["usable"]].groupby("layer", sort=False):
        weights = group[group["kind"] == "weight"]
        acts = group[group["kind"] == "activation"]
        act_choices = [(int(r.bits), r.indicator) for r in acts.itertuples()] or [
            (IMAGE_INPUT_BITS, 0.0)]
        for w in weights.itertuples():
            for a_bits, a_ind in act_choices:
                rows.append({"layer": layer, "w_bits": int(w.bits), "a_bits": a_bits,
                             "score": a_ind + alpha * w.indicator})
    table = pd.DataFrame(rows, columns=["layer", "w_bits", "a_bits", "score"])
    return SensitivityTable(table, "limpq_indicator", seconds, images * passes,
                            images * passes, images, {"alpha": alpha})


def indicator_summary(trained: IndicatorTraining, frame: pd.DataFrame, searchable: list[str],
                      alpha: float) -> dict:
    """What each LIMPQ RunRecord keeps of the indicator training (``extra``): its length and
    step cost, its loss curve, the repaired indicators and their init, how far training moved
    them (median relative change per kind) and the steps that reached the clamp."""
    steps = trained.history["steps"]
    moved = trained.movement(searchable).groupby("kind")["moved"].apply(
        lambda m: m.abs().median())
    return {"alpha": alpha, "indicator_steps": len(steps),
            "indicator_s_per_step": sum(s["seconds"] for s in steps) / max(len(steps), 1),
            "indicator_loss_curve": loss_curve(trained.history),
            "indicators": indicator_records(frame), "repaired_widths": int((~frame.usable).sum()),
            "indicator_median_change": {k: float(v) for k, v in moved.items()},
            "indicator_init": indicator_records(repair(trained.initial)),
            "indicator_steps_at_clamp": trained.history.get("dead_steps", {})}


def finetune_policies(ctx: Context, table: SensitivityTable, budgets: list[Budget],
                      uniform: list[str], candidates: list[int], qat: QatConfig,
                      extra: dict) -> pd.DataFrame:
    """One ILP over ``table`` per budget, then each policy and each ``uniform`` config
    (``"W4A4"``) fine-tuned with the same QAT schedule; one row per run (``policy`` names it).
    Run ids: ``limpq-<model>-<budget>-qat_lsq`` and ``limpq-<model>-uniform-<config>-qat_lsq``.
    ``extra``: the indicator summary, kept in the LIMPQ policies' records."""
    rows = []
    for budget in budgets:
        allocation = search_allocation(ctx, table, budget)
        allocation.bit_candidates = list(candidates)
        outcome = run_policy(ctx, allocation, FINETUNE_PROTOCOL, method="limpq", qat=qat,
                             run_id=run_id("limpq", ctx.model_name, budget_label(budget),
                                           FINETUNE_PROTOCOL), extra=extra)
        rows.append(outcome.row(policy=f"LIMPQ {budget_label(budget)}"))
    for config in uniform:
        allocation = uniform_allocation(ctx, config)
        allocation.bit_candidates = list(candidates)
        outcome = run_policy(ctx, allocation, FINETUNE_PROTOCOL, method="limpq", qat=qat,
                             run_id=run_id("limpq", ctx.model_name, "uniform", config,
                                           FINETUNE_PROTOCOL))
        rows.append(outcome.row(policy=f"uniform {config}"))
    return pd.DataFrame(rows)
