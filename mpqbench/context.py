"""What every run starts from, built once: the typed profile, the FP model, the data, the device.

``build_context`` is the one way in for notebooks, the CLI and the distributed entry point: it
checks the whole params.yaml (``params_schema.check_params``), parses the active profile into a
typed ``Profile``, seeds, loads the pinned FP checkpoint and the dataset splits, lists the
quantizable layers with their cost and evaluates the FP model on the test images every run is
evaluated on. Allocators turn a ``Context`` into a policy; protocols (``mpqbench.protocols``)
turn a ``Context`` and a policy into a RunRecord.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mpqbench.checkpoints import load_fp_model
from mpqbench.config import load_params, profile_settings
from mpqbench.cost import Bits, LayerCost, layer_costs
from mpqbench.data import Split, Splits, calibration_subset, load_splits
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import EvalResult, evaluate
from mpqbench.models.zoo import check_model_dataset
from mpqbench.params_schema import check_params
from mpqbench.ptq import PtqConfig
from mpqbench.quant.fold import fold_batchnorm
from mpqbench.quant.policy import fixed_layers
from mpqbench.runtime import resolve_device, seed_everything
from mpqbench.sensitivity import SensitivityContext
from mpqbench.train import QatConfig


@dataclass(frozen=True)
class EvalConfig:
    """Test evaluation (``profiles.<p>.eval``): images per batch; ``max_images``: the first N
    test images only (None: all of them)."""

    batch_size: int
    max_images: int | None = None


@dataclass(frozen=True)
class Profile:
    """One profile of params.yaml, typed, with the global keys merged in.

    ``name``: smoke | quick | paper; ``seed``: the runs' default seed; ``eval``, ``ptq``: the
    protocols' typed settings; ``settings``: the merged raw mapping, for the sections a single
    module reads (``sensitivity``, ``synth``, ``finetune``, ``limpq_indicators``,
    ``policy_bank``), each parsed by its own typed config there. The schema check has already
    refused unknown keys, wrong types and missing keys with their key paths.
    """

    name: str
    seed: int
    dataset: str
    device: str
    eval: EvalConfig
    ptq: PtqConfig
    settings: dict[str, Any] = field(repr=False)

    @classmethod
    def from_params(cls, params: dict[str, Any], name: str) -> Profile:
        settings = profile_settings(name, params)
        return cls(name=name, seed=int(settings["seed"]), dataset=settings["dataset"],
                   device=settings.get("device", "auto"), eval=EvalConfig(**settings["eval"]),
                   ptq=PtqConfig.from_dict(settings.get("ptq")), settings=settings)

    def method_cfg(self, method: str) -> dict[str, Any]:
        """``method_cfg.<method>`` of params.yaml."""
        cfgs = self.settings.get("method_cfg", {})
        if method not in cfgs:
            raise MpqbenchError(f"params.yaml has no method_cfg.{method}; add the method's "
                                "settings (see docs/adding-a-method.md)")
        return cfgs[method]

    def qat(self, overrides: dict[str, Any] | None = None, seed: int | None = None) -> QatConfig:
        """The profile's QAT schedule (``profiles.<p>.qat``) with ``overrides`` on top."""
        if "qat" not in self.settings:
            raise MpqbenchError(f"profile {self.name!r} has no 'qat' settings; add "
                                "profiles.<profile>.qat to params.yaml (see the quick profile)")
        return QatConfig.from_dict({**self.settings["qat"], **(overrides or {})},
                                   self.seed if seed is None else seed)


@dataclass
class Context:
    """The FP model and everything a run of it needs.

    ``layers``: every quantizable layer with its cost; ``fixed``: the layers kept out of the
    search (first conv and last linear at W8A8 unless ``fix_first_last: false``); ``fp``: the
    FP model on the test images (None until ``evaluate_fp``); ``runs_dir``: where
    ``protocols.run_policy`` saves each RunRecord as soon as its run ends (None: not saved).
    """

    model_name: str
    model: nn.Module
    checkpoint_meta: dict[str, Any]
    splits: Splits
    device: torch.device
    profile: Profile
    layers: list[LayerCost]
    fixed: Bits
    fp: EvalResult | None = None
    runs_dir: Path | None = None

    @property
    def seed(self) -> int:
        return self.profile.seed

    @property
    def settings(self) -> dict[str, Any]:
        return self.profile.settings

    @property
    def searchable(self) -> list[str]:
        """The layers a method allocates bits to, in model order."""
        return [layer.name for layer in self.layers if layer.name not in self.fixed]

    @property
    def fp_top1(self) -> float:
        if self.fp is None:
            raise MpqbenchError("the FP model was not evaluated; build the context with "
                                "evaluate_fp=True")
        return self.fp.top1

    def with_splits(self, splits: Splits) -> Context:
        """The same context on other splits (e.g. ``synth.without_real_training_data``)."""
        return replace(self, splits=splits)

    def evaluate(self, model: nn.Module, desc: str) -> EvalResult:
        """``model`` on the profile's test images (the ones ``fp`` was measured on)."""
        return evaluate(model, self.splits.test, self.profile.eval.batch_size, self.device,
                        self.profile.eval.max_images, desc=desc)

    def evaluate_fp(self) -> EvalResult:
        self.fp = self.evaluate(self.model, "FP test")
        return self.fp

    def calibration_batches(self, images: int | None = None, seed: int | None = None
                            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The PTQ protocol's calibration images (``ptq.calib_images`` of train, drawn with the
        seed), or the first ``images`` of that draw order, on the device."""
        ptq = self.profile.ptq
        train: Split = self.splits.train
        count = min(ptq.calib_images if images is None else images, len(train))
        subset = calibration_subset(train, count, self.seed if seed is None else seed)
        return [(x.to(self.device), y.to(self.device)) for x, y in subset.batches(ptq.batch_size)]

    def sensitivity_context(self, bits: list[int], a_bits: int,
                            batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                            ) -> SensitivityContext:
        """A metric's input: the BN-folded model, the searchable layers, weight widths ``bits``
        at ``a_bits``, and ``batches`` (default: the PTQ protocol's calibration images, so
        metrics and PTQ see the same images)."""
        folded = fold_batchnorm(self.model).to(self.device)
        return SensitivityContext(folded, self.searchable, sorted(bits), a_bits,
                                  self.calibration_batches() if batches is None else batches,
                                  self.profile.ptq.weight_observer, self.seed)


def context_for(model_name: str, model: nn.Module, splits: Splits, profile: Profile,
                device: torch.device | str = "cpu", checkpoint_meta: dict[str, Any] | None = None,
                runs_dir: str | Path | None = None) -> Context:
    """A context around a model and splits already in memory (tests, notebooks that bring
    their own model); the FP model is not evaluated (``ctx.evaluate_fp()`` does it)."""
    layers = layer_costs(model, splits.input_shape)
    return Context(model_name, model, checkpoint_meta or {}, splits, torch.device(device),
                   profile, layers, fixed_layers(layers, profile.settings),
                   runs_dir=None if runs_dir is None else Path(runs_dir))


def build_context(model_name: str, profile: str, params_file: str | Path = "params.yaml", *,
                  runs_dir: str | Path | None = None, evaluate_fp: bool = True,
                  checkpoint_dir: str | Path = "checkpoints", data_root: str = "data") -> Context:
    """Check params.yaml, then load everything a run of ``model_name`` under ``profile`` needs.

    Every mistake in params.yaml stops here, before the data or the checkpoint is read.
    """
    params = load_params(params_file)
    check_params(params, Path(params_file).resolve().parent)
    typed = Profile.from_params(params, profile)
    check_model_dataset(model_name, typed.dataset)  # an unknown name, before any file lookup
    seed_everything(typed.seed)
    device = resolve_device(typed.device)
    model, meta = load_fp_model(f"{checkpoint_dir}/{model_name}.pt")
    splits = load_splits(typed.dataset, data_root, typed.settings["data"]["val_size"],
                         typed.seed, typed.settings.get("imagenet_root"))
    ctx = context_for(model_name, model, splits, typed, device, meta, runs_dir)
    if evaluate_fp:
        ctx.evaluate_fp()
    return ctx
