"""Device choice, seeding and progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

import numpy as np
import torch

from mpqbench.errors import MpqbenchError

T = TypeVar("T")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cpu`` / ``cuda[:i]`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MpqbenchError(f"device {name!r} asked for but no CUDA device is present; use 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise MpqbenchError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from exc


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; same seed and profile give the same result on the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PROGRESS_FILE_ENV = "MPQBENCH_PROGRESS_FILE"
_progress_streams: dict[str, TextIO] = {}


def _progress_stream() -> tuple[TextIO, bool]:
    """Where bars go, and whether it is a terminal.

    Inside a notebook run by ``mpqbench.notebook`` the runner names a file in
    ``MPQBENCH_PROGRESS_FILE`` and copies it to the terminal of ``dvc repro``, so that bars
    never land in the rendered notebook.
    """
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return sys.stderr, sys.stderr.isatty()
    if path not in _progress_streams:
        _progress_streams[path] = open(path, "a", buffering=1)  # noqa: SIM115 (kept open)
    return _progress_streams[path], False


def progress(iterable: Iterable[T], desc: str, total: int | None = None, **kwargs) -> Iterable[T]:
    """A plain-text tqdm bar (no widgets); throttled when not writing to a terminal.

    ``MPQBENCH_PROGRESS=off`` silences bars (tests).
    """
    from tqdm import tqdm

    if os.environ.get("MPQBENCH_PROGRESS") == "off":
        return iterable
    stream, interactive = _progress_stream()
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        mininterval=0.2 if interactive else 15.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
        file=stream,
        **kwargs,
    )
