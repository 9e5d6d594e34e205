"""Shared fixtures. The real CIFAR-10 mirror is converted once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPQBENCH_PROGRESS", "off")


def mirror_path() -> Path | None:
    value = os.environ.get("MPQBENCH_MIRROR")
    return Path(value).resolve() if value else None


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory) -> Path:
    """The data folder holding a prepared ``cifar10`` cache (from the mirror, or downloaded)."""
    from mpqbench.data import prepare_dataset

    if mirror_path() is None and os.environ.get("MPQBENCH_ALLOW_DOWNLOAD") != "1":
        pytest.skip("set MPQBENCH_MIRROR (or MPQBENCH_ALLOW_DOWNLOAD=1) for real CIFAR-10 tests")
    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("cifar10", data_dir / "cifar10")
    return data_dir


@pytest.fixture(scope="session")
def cifar_splits(cifar_cache):
    from mpqbench.data import load_splits

    return load_splits("cifar10", cifar_cache, val_size=5000, seed=0)


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv("MPQBENCH_MIRROR", raising=False)
