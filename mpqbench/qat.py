"""The quantization-aware training protocols: ``qat_lsq`` and ``qat_saq``.

Both start from the FP checkpoint with a Policy applied through LSQ quantizers (one learned
step per layer for weights and for inputs, LIMPQ's sigma init for weights, normal BatchNorm
kept), train on the same data, schedule and seed (``train.QatConfig``) and differ only in
their training step: ``sgd`` for ``qat_lsq``, ``saq`` for ``qat_saq``.

Steps are used as ``|s|`` with no clamp (the authors' fine-tuning quantizers have none), the
fixed W8A8 first and last layers keep their calibrated steps frozen, and training stops with
an error as soon as a step is dead or the loss is not finite (``train.qat_train``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from mpqbench.cost import Bits
from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.quant.modules import freeze_steps, quantize_model
from mpqbench.quant.policy import Policy
from mpqbench.registry import Registry
from mpqbench.train import TRAIN_STEPS, QatConfig, TrainStep, qat_train

QAT_PROTOCOLS: Registry[str] = Registry("QAT protocol")  # protocol -> training step name
QAT_PROTOCOLS.add("qat_lsq", "sgd")
QAT_PROTOCOLS.add("qat_saq", "saq")

LSQ_OPTIONS = {"lsq_per_channel": False, "step_range": None, "weight_init": "sigma"}


@dataclass
class QatResult:
    """The trained model (eval mode), the loss history, the step used, and ``seconds``: the
    training steps' wall time summed over the history (so a resumed run counts the steps done
    before the interruption too; batch preparation is not included)."""

    model: nn.Module
    history: dict
    step: TrainStep

    @property
    def seconds(self) -> float:
        return sum(s["seconds"] for s in self.history["steps"])

    def seconds_per_step(self) -> float:
        steps = self.history["steps"]
        return sum(s["seconds"] for s in steps) / max(len(steps), 1)


def qat_model(fp_model: nn.Module, bits: Bits | Policy, input_shape: tuple[int, ...],
              frozen: Iterable[str] = ()) -> nn.Module:
    """A copy of the FP model with LSQ quantizers at ``bits`` (the QAT protocols' start);
    the steps of the ``frozen`` layers (the fixed first and last layers) are not trained."""
    model = quantize_model(fp_model, bits, input_shape, "lsq", "lsq", **LSQ_OPTIONS)
    freeze_steps(model, frozen)
    return model


def run_qat(
    protocol: str, fp_model: nn.Module, bits: Bits | Policy, train: Split,
    input_shape: tuple[int, ...], config: QatConfig, device: torch.device | str = "cpu",
    step_options: dict[str, Any] | None = None, resume_path: str | None = None,
    desc: str | None = None, frozen: Iterable[str] = (),
) -> QatResult:
    """Fine-tune ``fp_model`` under ``bits`` with ``protocol`` (``qat_lsq`` or ``qat_saq``).

    ``step_options`` go to the step (SAQ: ``rho``, ``case``, ``every``, ``probability``,
    ``perturb_space``, ``perturb_steps``); the step's seed is the config's. ``frozen``: layers
    whose steps stay at their calibrated init (the fixed first and last layers).
    """
    step_name = QAT_PROTOCOLS.get(protocol)
    try:
        step = TRAIN_STEPS.get(step_name)(**(step_options or {}),
                                          **({"seed": config.seed} if step_name == "saq" else {}))
    except TypeError as exc:
        raise MpqbenchError(f"{protocol}: bad step options {step_options} ({exc}); qat_lsq "
                            "takes none, qat_saq takes rho, case, every, probability, "
                            "perturb_space, perturb_steps") from exc
    model = qat_model(fp_model, bits, input_shape, frozen)
    tag = fingerprint(fp_model, bits, protocol, step_options, sorted(frozen))
    history = qat_train(model, train, config, step, device, resume_path, desc=desc or protocol,
                        resume_tag=tag)
    return QatResult(model, history, step)


def fingerprint(model: nn.Module, *args: Any) -> str:
    """A SHA-256 of the model's weights and ``args`` (names a resume state)."""
    digest = hashlib.sha256(repr(args).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def loss_curve(history: dict, max_points: int = 500) -> list[dict[str, float]]:
    """The steps' losses and seconds (rounded to 5 digits) for RunRecords: every step, or
    every k-th one (always the first) so that at most about ``max_points`` are kept."""
    steps = history["steps"]
    every = max(1, -(-len(steps) // max_points))
    return [{k: round(float(v), 5) for k, v in s.items()} for s in steps[::every]]
