"""What the benchmarks share: the model and data they measure on."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import torch
import torch.nn as nn

from mpqbench.checkpoints import load_fp_model
from mpqbench.data import Splits, load_splits
from mpqbench.errors import MpqbenchError
from mpqbench.malloc import keep_freed_memory
from mpqbench.models import pretrained_model
from mpqbench.results import cpu_description

FIGURES_DIR = Path("results/benchmarks")
keep_freed_memory()  # the benchmarks measure under the settings the pipeline runs with


def resnet20_and_cifar(data_dir: str = "data", val_size: int = 5000
                       ) -> tuple[nn.Module, Splits, str]:
    """The adapted ResNet-20 when `dvc repro` has made it, else the published weights;
    ``val_size`` train images held out (as the pipeline's ``data.val_size``)."""
    if not (Path(data_dir) / "cifar10" / "meta.json").is_file():
        raise MpqbenchError("run `dvc repro data` (or `python -m mpqbench data --dataset cifar10 "
                            "--out data/cifar10`) before the benchmarks")
    splits = load_splits("cifar10", data_dir, val_size, 0)
    checkpoint = Path("checkpoints/resnet20.pt")
    if checkpoint.is_file():
        model, _ = load_fp_model(checkpoint)
        return model, splits, str(checkpoint)
    return pretrained_model("resnet20", "cifar10", 10), splits, "published weights"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's kernels run asynchronously), so that a wall
    clock read after it measures them; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_figures(name: str, title: str, rows: list[dict], settings: dict | None = None,
                  notes: list[str] | None = None) -> Path:
    """Save one benchmark's figures as ``results/benchmarks/<name>.json``.

    ``rows``: one dict per measured case (the same keys in each; ratios measured in this run);
    ``settings``: what the run measured on (images, repeats, ...). The machine's CPU, cores,
    torch threads and versions and the date are added. ``python -m benchmarks.tables`` renders
    every such file into ``docs/performance.md``.
    """
    path = FIGURES_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "title": title, "date": date.today().isoformat(),
              "cpu": cpu_description(), "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "settings": settings or {}, "rows": rows, "notes": notes or []}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {path}")
    return path
