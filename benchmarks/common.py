"""What the benchmarks share: the model and data they measure on."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from mpqbench.checkpoints import load_fp_model
from mpqbench.data import Splits, load_splits
from mpqbench.errors import MpqbenchError
from mpqbench.models import pretrained_model


def resnet20_and_cifar(data_dir: str = "data") -> tuple[nn.Module, Splits, str]:
    """The adapted ResNet-20 when `dvc repro` has made it, else the published weights."""
    if not (Path(data_dir) / "cifar10" / "meta.json").is_file():
        raise MpqbenchError("run `dvc repro data` (or `python -m mpqbench data --dataset cifar10 "
                            "--out data/cifar10`) before the benchmarks")
    splits = load_splits("cifar10", data_dir, 5000, 0)
    checkpoint = Path("checkpoints/resnet20.pt")
    if checkpoint.is_file():
        model, _ = load_fp_model(checkpoint)
        return model, splits, str(checkpoint)
    return pretrained_model("resnet20", "cifar10", 10), splits, "published weights"
