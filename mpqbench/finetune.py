"""Adapting the published FP model to the dataset variant: SGD with a one-cycle schedule.

It runs the suite's one training loop (``loop.run_loop``) with its own step, so the checkpoint
stage depends on the loop and this file, not on the QAT steps of ``train.py``: a change to
QAT does not make the pinned FP checkpoint stale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.data import Split
from mpqbench.loop import LoopPlan, run_loop


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
    """Fine-tune in place with pad-crop and flip augmentation (``loop.run_loop``); returns one
    dict per epoch: its mean training loss and top-1 over its images, the summed seconds of
    its steps and its image count.

    With ``resume_path`` the state after every epoch is saved there and an interrupted run
    resumes from it with the same result.
    """
    if config.epochs <= 0:
        return []
    model.to(device).train()
    per_epoch = -(-len(train) // config.batch_size)
    if config.max_batches_per_epoch is not None:
        per_epoch = min(per_epoch, config.max_batches_per_epoch)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr_max, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr_max, total_steps=config.epochs * per_epoch
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "correct": (logits.argmax(1) == y).sum().item(),
                "images": len(y)}

    history = run_loop(
        LoopPlan(config.epochs, per_epoch, config.batch_size, config.seed), train, step,
        {"model": model, "optimizer": optimizer, "scheduler": scheduler}, scheduler=scheduler,
        prepare=lambda x, y: (x.to(device), y.to(device)), resume_path=resume_path,
        identity={"finetune": asdict(config)}, desc="fine-tune")
    epochs = []
    for epoch in range(1, config.epochs + 1):
        steps = history.epoch(epoch)
        seen = sum(s["images"] for s in steps)
        epochs.append({
            "epoch": epoch,
            "train_loss": sum(s["loss"] * s["images"] for s in steps) / seen,
            "train_top1": 100.0 * sum(s["correct"] for s in steps) / seen,
            "seconds": sum(s["seconds"] for s in steps),
            "images": seen,
        })
    model.eval()
    return epochs
