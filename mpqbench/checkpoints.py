"""The FP checkpoint the pipeline uses: published weights, adapted to the dataset variant."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch.nn as nn

from mpqbench.artifacts import checksum_path, load_artifact, save_artifact
from mpqbench.data import load_splits
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.finetune import FinetuneConfig, finetune
from mpqbench.models.zoo import MODELS, build_model, pretrained_model
from mpqbench.results import provenance
from mpqbench.runtime import resolve_device, seed_everything


def finetune_config(settings: dict[str, Any], variant: str) -> FinetuneConfig:
    """The profile's fine-tuning schedule for a dataset variant (epochs are set per variant)."""
    ft = dict(settings["finetune"])
    epochs_by_variant = ft.pop("epochs")
    if variant not in epochs_by_variant:
        raise MpqbenchError(
            f"profile {settings['profile']!r} sets no finetune.epochs for dataset variant "
            f"{variant!r}; add it in params.yaml (known: {sorted(epochs_by_variant)})"
        )
    return FinetuneConfig(epochs=int(epochs_by_variant[variant]), seed=settings["seed"], **ft)


def make_fp_checkpoint(
    model_name: str,
    settings: dict[str, Any],
    out_path: str | Path,
    metrics_path: str | Path,
    data_dir: str | Path = "data",
) -> dict[str, Any]:
    """Load the published weights, fine-tune for the profile, save the model and its metrics.

    Writes ``out_path`` (``{"state_dict", "meta"}``, loadable with ``weights_only=True``) and a
    DVC metrics JSON with the test accuracy before and after adaptation.
    """
    MODELS.get(model_name)  # an unknown name fails before any data is read
    seed_everything(settings["seed"])
    device = resolve_device(settings.get("device", "auto"))
    splits = load_splits(settings["dataset"], data_dir, settings["data"]["val_size"],
                         settings["seed"], settings.get("imagenet_root"))
    model = pretrained_model(model_name, splits.dataset, splits.num_classes)
    eval_cfg = settings["eval"]
    test_kwargs = dict(batch_size=eval_cfg["batch_size"], device=device,
                       max_images=eval_cfg.get("max_images"))
    start = time.perf_counter()
    published = evaluate(model, splits.test, desc="published weights", **test_kwargs)
    config = finetune_config(settings, splits.variant)
    out_path = Path(out_path)
    history = finetune(model, splits.train, config, device,
                       resume_path=out_path.with_suffix(".resume"))
    adapted = evaluate(model, splits.test, desc="adapted", **test_kwargs)
    val = evaluate(model, splits.val, desc="adapted val", **test_kwargs)
    timing = ("seconds", "images_per_s")  # kept out of the file: its bytes repeat with the run
    meta = {
        "model": model_name,
        "dataset": splits.dataset,
        "dataset_variant": splits.variant,
        "num_classes": splits.num_classes,
        "finetune": asdict(config),
        "history": [{k: v for k, v in epoch.items() if k not in timing} for epoch in history],
        "published_test": _without(published.to_dict(), timing),
        "test": _without(adapted.to_dict(), timing),
        "val": _without(val.to_dict(), timing),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    digest = save_artifact({"state_dict": model.cpu().state_dict(), "meta": meta}, out_path)
    out_path.with_suffix(".resume").unlink(missing_ok=True)
    checksum_path(out_path.with_suffix(".resume")).unlink(missing_ok=True)
    metrics = {
        "published_test_top1": published.top1,
        "test_top1": adapted.top1,
        "test_top5": adapted.top5,
        "val_top1": val.top1,
        "test_images": adapted.images,
        "finetune_epochs": config.epochs,
        "finetune_seconds": sum(h["seconds"] for h in history),
        "dataset_variant": splits.variant,
        "sha256": digest,
        "seconds": time.perf_counter() - start,
        "provenance": provenance(settings["seed"], settings["profile"], device),
    }
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_path).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


def _without(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in keys}


def load_fp_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The adapted FP model (eval mode, CPU) and the metadata saved with it.

    The file's sha256 is checked against the one written beside it (``NAME.pt.sha256``).
    """
    path = Path(path)
    # the committed copy first: a rebuild re-runs every stage below the checkpoint
    fix = (f"restore the committed copy with `git checkout -- {path} {checksum_path(path)}` "
           "(or, to rebuild it on purpose, `dvc repro checkpoint`)")
    if not path.is_file():
        raise MpqbenchError(
            f"no FP checkpoint at {path}; build it with `dvc repro checkpoint` "
            f"(or `python -m mpqbench checkpoint --model NAME`)"
        )
    blob = load_artifact(path, fix)
    try:
        meta = blob["meta"]
        model = build_model(meta["model"], meta["num_classes"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError, MpqbenchError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise MpqbenchError(f"{path} is not a usable mpqbench checkpoint ({detail}); {fix}"
                            ) from exc
    return model.eval(), meta
