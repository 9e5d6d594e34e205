"""Accuracy, loss and throughput of a model on a split."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.data import Split, calibration_subset
from mpqbench.runtime import progress


@dataclass
class EvalResult:
    """top-1 / top-5 in percent, mean cross-entropy loss in nats, images per second, and
    ``correct``: whether each image's top-1 was right, in the split's order (for paired
    comparisons of two models on the same images; left out of ``to_dict``)."""

    top1: float
    top5: float
    loss: float
    images: int
    seconds: float
    images_per_s: float
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "correct"}


def limit_images(split: Split, max_images: int | None) -> Split:
    """``split`` itself, or a fixed random subset (seed 0) of ``max_images`` of its images."""
    if max_images is None or max_images >= len(split):
        return split
    return calibration_subset(split, max_images, seed=0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    max_images: int | None = None,
    desc: str = "evaluate",
) -> EvalResult:
    """Evaluate in eval mode on ``split``, or on a fixed seeded subset of ``max_images`` images.

    The subset is drawn at random (seed 0) because the cached splits are ordered by class.
    """
    split = limit_images(split, max_images)
    model.eval().to(device)
    correct1 = correct5 = 0
    loss_sum = 0.0
    hits = []
    start = time.perf_counter()
    for x, y in progress(split.batches(batch_size), desc, total=-(-len(split) // batch_size)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        right = top[:, 0] == y
        hits.append(right.cpu())
        correct1 += right.sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
    if device != "cpu" and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n = len(split)
    return EvalResult(
        top1=100.0 * correct1 / n,
        top5=100.0 * correct5 / n,
        loss=loss_sum / n,
        images=n,
        seconds=seconds,
        images_per_s=n / seconds if seconds > 0 else float("inf"),
        correct=torch.cat(hits).numpy() if hits else np.zeros(0, dtype=bool),
    )


@torch.no_grad()
def per_class_accuracy(
    model: nn.Module, split: Split, num_classes: int, batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Top-1 accuracy of each class in percent, shape (num_classes,)."""
    model.eval().to(device)
    hits = torch.zeros(num_classes)
    counts = torch.zeros(num_classes)
    for x, y in split.batches(batch_size):
        pred = model(x.to(device)).argmax(1).cpu()
        counts += torch.bincount(y, minlength=num_classes)
        hits += torch.bincount(y[pred == y], minlength=num_classes)
    return 100.0 * hits / counts.clamp(min=1)
