"""Adapting the published FP model to the dataset variant: SGD with a one-cycle schedule.

Kept apart from the QAT loop (``train.py``) so that the checkpoint stage depends on this file
alone: a change to QAT does not make the pinned FP checkpoint stale.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.artifacts import load_artifact, save_artifact
from mpqbench.data import Split
from mpqbench.runtime import progress


@dataclass(frozen=True)
class FinetuneConfig:
    """SGD with a one-cycle schedule; ``max_batches_per_epoch`` shortens epochs (smoke runs)."""

    epochs: int
    batch_size: int = 128
    lr_max: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_batches_per_epoch: int | None = None
    seed: int = 0


def finetune(
    model: nn.Module,
    train: Split,
    config: FinetuneConfig,
    device: torch.device | str = "cpu",
    resume_path: str | Path | None = None,
) -> list[dict]:
    """Fine-tune in place with pad-crop and flip augmentation; returns one dict per epoch.

    With ``resume_path``, the state after every epoch is saved there and an interrupted run
    resumes from it. Epoch ``e`` shuffles with seed ``seed + e``, so a resumed run equals an
    uninterrupted one.
    """
    if config.epochs <= 0:
        return []
    model.to(device).train()
    steps = -(-len(train) // config.batch_size)
    if config.max_batches_per_epoch is not None:
        steps = min(steps, config.max_batches_per_epoch)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr_max, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr_max, total_steps=config.epochs * steps
    )
    history: list[dict] = []
    start_epoch = 0
    resume_path = Path(resume_path) if resume_path else None
    if resume_path is not None and resume_path.is_file():
        saved = load_artifact(resume_path, f"delete {resume_path} to start the fine-tuning over")
        if saved.get("config") == asdict(config):
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            history, start_epoch = saved["history"], saved["epoch"]
            print(f"resuming fine-tuning after epoch {start_epoch} from {resume_path}")
    for epoch in range(start_epoch, config.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        batches = train.batches(
            config.batch_size, shuffle=True, augment=True, seed=config.seed + epoch
        )
        limited = zip(range(steps), batches, strict=False)
        bar = progress(limited, f"fine-tune epoch {epoch + 1}", total=steps)
        for _, (x, y) in bar:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        history.append({
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_top1": 100.0 * correct / seen,
            "seconds": time.perf_counter() - start,
            "images": seen,
        })
        if resume_path is not None:
            save_artifact({
                "config": asdict(config), "epoch": epoch + 1, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            }, resume_path)
    model.eval()
    return history
