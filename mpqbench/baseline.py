"""The FP baseline run: the adapted model evaluated on test, recorded as a RunRecord."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from mpqbench.checkpoints import load_fp_model
from mpqbench.cost import Bits, LayerCost, cost_summary, layer_costs
from mpqbench.data import Splits, load_splits
from mpqbench.evaluate import EvalResult, evaluate, limit_images, per_class_accuracy
from mpqbench.results import RunRecord, provenance
from mpqbench.runtime import resolve_device, seed_everything


def load_context(model_name: str, settings: dict[str, Any], checkpoint_dir: str = "checkpoints"):
    """(FP model, its checkpoint metadata, the dataset splits, the device) for a notebook."""
    seed_everything(settings["seed"])
    device = resolve_device(settings.get("device", "auto"))
    model, meta = load_fp_model(f"{checkpoint_dir}/{model_name}.pt")
    splits = load_splits(settings["dataset"], "data", settings["data"]["val_size"],
                         settings["seed"], settings.get("imagenet_root"))
    return model, meta, splits, device


def fp_baseline_run(
    model: torch.nn.Module, splits: Splits, model_name: str, settings: dict[str, Any],
    device: torch.device,
) -> tuple[RunRecord, EvalResult, torch.Tensor]:
    """Evaluate the FP model on test; returns its RunRecord, the result and per-class top-1."""
    start = time.perf_counter()
    eval_cfg = settings["eval"]
    result = evaluate(model, splits.test, eval_cfg["batch_size"], device,
                      eval_cfg.get("max_images"), desc="FP test")
    test = limit_images(splits.test, eval_cfg.get("max_images"))
    per_class = per_class_accuracy(model, test, splits.num_classes, eval_cfg["batch_size"], device)
    layers = layer_costs(model, splits.input_shape)
    cost = cost_summary(layers, {layer.name: (32, 32) for layer in layers})
    record = RunRecord(
        run_id=f"fp-{model_name}",
        method="fp",
        model=model_name,
        dataset=splits.dataset,
        dataset_variant=splits.variant,
        protocol="none",
        cost=cost,
        accuracy={
            "fp_top1": result.top1, "top1": result.top1, "top5": result.top5,
            "loss": result.loss, "drop": 0.0, "test_images": result.images,
        },
        timing={"sensitivity_s": 0.0, "search_s": 0.0, "protocol_s": 0.0,
                "total_s": time.perf_counter() - start,
                "eval_images_per_s": result.images_per_s},
        provenance=provenance(settings["seed"], settings["profile"], device),
        extra={"per_class_top1": dict(zip(splits.classes, per_class.tolist(), strict=True))},
    )
    return record, result, per_class


@dataclass
class MethodSetup:
    """What every method notebook starts from.

    settings: the profile's settings; cfg: ``method_cfg.<method>``; layers: every quantizable
    layer with its cost; fixed: the layers outside the search (W8A8 by default); searchable:
    the other layer names; fp: the FP model on the test images every run is evaluated on.
    """

    settings: dict[str, Any]
    cfg: dict[str, Any]
    model: torch.nn.Module
    checkpoint_meta: dict[str, Any]
    splits: Splits
    device: torch.device
    layers: list[LayerCost]
    fixed: Bits
    searchable: list[str]
    fp: EvalResult


def method_setup(method: str, model_name: str, profile: str,
                 params_file: str = "params.yaml") -> MethodSetup:
    """Load params, the FP model and data, the layers, and evaluate the FP model on test."""
    from mpqbench.config import load_params, profile_settings
    from mpqbench.errors import MpqbenchError
    from mpqbench.quant.policy import fixed_layers

    settings = profile_settings(profile, load_params(params_file))
    if method not in settings.get("method_cfg", {}):
        raise MpqbenchError(f"params.yaml has no method_cfg.{method}; add the method's settings")
    model, meta, splits, device = load_context(model_name, settings)
    layers = layer_costs(model, splits.input_shape)
    fixed = fixed_layers(layers, settings)
    eval_cfg = settings["eval"]
    fp = evaluate(model, splits.test, eval_cfg["batch_size"], device, eval_cfg.get("max_images"),
                  desc="FP test")
    return MethodSetup(settings, settings["method_cfg"][method], model, meta, splits, device,
                       layers, fixed, [ly.name for ly in layers if ly.name not in fixed], fp)
