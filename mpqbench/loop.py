"""The one resumable training loop: FP adaptation (``finetune.py``) and QAT (``train.py``).

``run_loop`` walks ``epochs`` epochs of at most ``per_epoch`` batches (epoch ``e`` shuffled
with seed ``seed + e``), calls ``step(x, y)`` for one optimizer step, then the scheduler,
then ``after_step`` (checks), and records every step's returned numbers and wall seconds.
With ``resume_path`` the loop saves its state (every object of ``state`` plus its own place
and history) every ``checkpoint_every`` steps and at each epoch's end; a later call with the
same ``identity`` resumes there, skipping the batches it has done, so a resumed run ends
with the same weights as an uninterrupted one. A saved state of another identity is ignored.
The state is deleted when the loop completes, so no finished run leaves one to go stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mpqbench.artifacts import checksum_path, load_artifact, save_artifact
from mpqbench.data import Split
from mpqbench.runtime import progress


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


@dataclass
class LoopPlan:
    """How long and on what: ``epochs`` of ``per_epoch`` batches of ``batch_size`` images,
    shuffled and augmented with seed ``seed + epoch``; ``checkpoint_every``: steps between
    resume saves (0: at epoch ends only)."""

    epochs: int
    per_epoch: int
    batch_size: int
    seed: int
    checkpoint_every: int = 0


@dataclass
class LoopHistory:
    """Every step's numbers (``step``, ``epoch``, what ``step`` returned, ``seconds``: the
    step's wall time, batch preparation excluded) and the first step each event was seen at
    (``events``, e.g. LIMPQ's steps at the clamp)."""

    steps: list[dict[str, float]] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)

    def epoch(self, epoch: int) -> list[dict[str, float]]:
        return [s for s in self.steps if s["epoch"] == epoch]


def run_loop(
    plan: LoopPlan,
    train: Split,
    step: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
    state: Mapping[str, Stateful],
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    before_epoch: Callable[[int], None] | None = None,
    after_step: Callable[[int, dict[str, float], LoopHistory], None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
    prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    resume_path: str | Path | None = None,
    identity: dict[str, Any] | None = None,
    saves: bool = True,
    desc: str = "train",
) -> LoopHistory:
    """Train; see the module doc. ``state``: the objects a resume restores (model, optimizer,
    the step's own state), the ``scheduler`` among them if given; ``prepare``: a batch to the
    device (and to this rank's slice); ``before_epoch`` / ``after_epoch`` get the epoch
    (1-based), ``after_step`` the steps done, the step's numbers and the history so far;
    ``saves``: False on the ranks that must not write."""
    history = LoopHistory()
    done = 0
    path = Path(resume_path) if resume_path else None
    if path is not None and path.is_file():
        saved = load_artifact(path, f"delete {path} to start the run over")
        if saved.get("identity") == (identity or {}):
            for name, obj in state.items():
                obj.load_state_dict(saved["state"][name])
            history = LoopHistory(saved["steps"], saved["events"])
            done = saved["done"]
            print(f"resuming {desc} after step {done} of {plan.epochs * plan.per_epoch} "
                  f"from {path}")

    def save() -> None:
        if path is not None and saves:
            save_artifact({"identity": identity or {}, "done": done, "steps": history.steps,
                           "events": history.events,
                           "state": {name: obj.state_dict() for name, obj in state.items()}},
                          path)

    for epoch in range(done // max(plan.per_epoch, 1), plan.epochs):
        if before_epoch is not None:
            before_epoch(epoch + 1)
        skip = done - epoch * plan.per_epoch
        batches = train.batches(plan.batch_size, shuffle=True, augment=True,
                                seed=plan.seed + epoch)
        limited = zip(range(plan.per_epoch), batches, strict=False)
        bar = progress(limited, f"{desc} epoch {epoch + 1}/{plan.epochs}", total=plan.per_epoch)
        for i, (x, y) in bar:
            if i < skip:
                continue
            start = time.perf_counter()
            numbers = step(*prepare(x, y))
            if scheduler is not None:
                scheduler.step()
            done += 1
            if after_step is not None:
                after_step(done, numbers, history)
            history.steps.append({"step": done, "epoch": epoch + 1, **numbers,
                                  "seconds": time.perf_counter() - start})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{v:.3f}" for k, v in numbers.items() if k == "loss"},
                                refresh=False)
            if plan.checkpoint_every and done % plan.checkpoint_every == 0:
                save()
        if after_epoch is not None:
            after_epoch(epoch + 1)
        save()
    if path is not None and saves:  # finished: no state left to go stale
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    return history
