"""A bank of random policies with measured accuracy drops, to judge sensitivity metrics by.

Random policies that meet one budget (``search.random_bits``) each go through the PTQ
protocol and are evaluated on the validation split. A metric is good when the sum of its
scores over a policy's choices ranks the policies as their measured drops do (Spearman and
Kendall rank correlation). The bank is a pipeline artifact (``policy_bank@<model>``), so every
method can score its metric against the same measurements.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch.nn as nn

from mpqbench.cost import Bits, Budget, layer_costs
from mpqbench.data import Splits
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.ptq import PtqConfig, run_ptq
from mpqbench.quant.policy import fixed_layers
from mpqbench.results import provenance
from mpqbench.runtime import progress
from mpqbench.search import random_bits

BANK_SCHEMA_VERSION = 1


def _bank_config(settings: dict[str, Any]) -> dict[str, Any]:
    spec = settings.get("policy_bank")
    if not spec:
        raise MpqbenchError(f"profile {settings['profile']!r} has no policy_bank settings; "
                            "see params.yaml")
    missing = sorted({"count", "budget", "bits", "a_bits"} - set(spec))
    if missing:
        raise MpqbenchError(f"policy_bank settings of profile {settings['profile']!r} lack "
                            f"{missing}; see params.yaml")
    return {"count": int(spec["count"]), "budget": dict(spec["budget"]),
            "bits": sorted(spec["bits"]), "a_bits": int(spec["a_bits"]),
            "rounding": spec.get("rounding", "nearest"), "val_images": spec.get("val_images"),
            "ptq": PtqConfig.from_dict(settings.get("ptq")).to_dict(), "seed": settings["seed"],
            "fix_first_last": settings.get("fix_first_last", True)}


def build_policy_bank(model: nn.Module, splits: Splits, model_name: str,
                      settings: dict[str, Any], device, out: str | Path) -> dict[str, Any]:
    """Sample, quantize and evaluate ``policy_bank.count`` random policies; write ``out``.

    Each finished policy is also appended to ``<out>.partial``; a rerun with the same settings
    resumes from it, so an interrupted bank loses at most one policy.
    """
    out = Path(out)
    config = _bank_config(settings)
    layers = layer_costs(model, splits.input_shape)
    fixed = fixed_layers(layers, settings)
    budget = Budget.from_dict(config["budget"])
    choices = [(b, config["a_bits"]) for b in config["bits"]]
    ptq_config = PtqConfig.from_dict(settings.get("ptq"))
    partial = out.with_name(out.name + ".partial")
    entries: list[dict[str, Any]] = []
    if partial.is_file():
        saved = json.loads(partial.read_text())
        if saved.get("config") == config and saved.get("model") == model_name:
            entries = saved["entries"]
    start = time.perf_counter()
    fp = evaluate(model, splits.val, 500, device, config["val_images"], desc="FP val")
    for i in progress(range(len(entries), config["count"]), "policy bank",
                      total=config["count"] - len(entries)):
        bits = random_bits(choices, layers, budget, fixed, seed=config["seed"] * 100_003 + i)
        ptq = run_ptq(model, bits, splits.train, splits.input_shape, config["rounding"],
                      ptq_config, device, config["seed"])
        val = evaluate(ptq.model, splits.val, 500, device, config["val_images"],
                       desc=f"policy {i}")
        entries.append({"index": i, "bits": {k: list(v) for k, v in bits.items()},
                        "val_top1": val.top1, "drop": fp.top1 - val.top1})
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"config": config, "model": model_name,
                                       "entries": entries}))
    bank = {"schema_version": BANK_SCHEMA_VERSION, "model": model_name,
            "dataset_variant": splits.variant, "config": config, "fp_val_top1": fp.top1,
            "val_images": fp.images, "entries": entries,
            "seconds": time.perf_counter() - start,
            "provenance": provenance(settings["seed"], settings["profile"], device)}
    out.write_text(json.dumps(bank, indent=1, sort_keys=True) + "\n")
    partial.unlink(missing_ok=True)
    return bank


def load_policy_bank(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        bank = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MpqbenchError(f"cannot read policy bank {path} ({exc}); run "
                            "`dvc repro policy_bank` to build it") from exc
    if bank.get("schema_version") != BANK_SCHEMA_VERSION or not bank.get("entries"):
        raise MpqbenchError(f"{path} is not a policy bank of schema {BANK_SCHEMA_VERSION}")
    return bank


def predicted_scores(table: pd.DataFrame, bank: dict[str, Any]) -> pd.Series:
    """Each bank policy's summed score under ``table`` (its fixed layers excluded)."""
    lookup = {(r.layer, int(r.w_bits), int(r.a_bits)): float(r.score)
              for r in table.itertuples(index=False)}
    searchable = set(table.layer)
    sums = []
    for entry in bank["entries"]:
        bits: Bits = {k: tuple(v) for k, v in entry["bits"].items()}
        try:
            sums.append(sum(lookup[name, w, a] for name, (w, a) in bits.items()
                            if name in searchable))
        except KeyError as exc:
            raise MpqbenchError(f"the table has no score for {exc.args[0]}; score the bank "
                                "with a table over the bank's bit choices") from exc
    return pd.Series(sums, index=[e["index"] for e in bank["entries"]])


def rank_correlations(predicted: pd.Series, measured: pd.Series) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b between predicted scores and measured drops."""
    frame = pd.DataFrame({"predicted": predicted.to_numpy(), "measured": measured.to_numpy()})
    return {"spearman": float(frame.corr(method="spearman").iloc[0, 1]),
            "kendall": float(frame.corr(method="kendall").iloc[0, 1]), "policies": len(frame)}


def measured_drops(bank: dict[str, Any]) -> pd.Series:
    return pd.Series([e["drop"] for e in bank["entries"]],
                     index=[e["index"] for e in bank["entries"]])
