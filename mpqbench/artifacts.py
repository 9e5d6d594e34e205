"""Trained artifacts on disk: written atomically with a sha256 beside them, verified on load.

A checkpoint or a resume state is saved as ``NAME`` plus ``NAME.sha256`` (the format of
``sha256sum``, so ``sha256sum -c NAME.sha256`` checks it by hand). ``load_artifact`` refuses a
file whose bytes do not match, a missing checksum, and anything ``torch.load`` cannot read with
``weights_only=True``, each with one error that names the file and how to rebuild it.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mpqbench.errors import MpqbenchError

CHUNK_BYTES = 1 << 20


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """Where the sha256 of ``path`` is kept: ``path`` + ``.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def save_artifact(obj: Any, path: str | Path) -> str:
    """``torch.save`` to a temporary file, then the checksum, then both renamed into place.

    Returns the sha256. A crash at any point leaves the previous pair or none, never a file
    without its matching checksum.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    digest = sha256_of(tmp)
    checksum_tmp = checksum_path(path).with_suffix(".tmp-sha256")
    checksum_tmp.write_text(f"{digest}  {path.name}\n")
    checksum_path(path).unlink(missing_ok=True)
    tmp.replace(path)
    checksum_tmp.replace(checksum_path(path))
    return digest


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 written beside ``path``, or None when there is none."""
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text().split()
    return fields[0] if fields else ""


def load_artifact(path: str | Path, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """The object saved by ``save_artifact``, after its checksum and format are verified.

    ``fix``: what rebuilds the file (e.g. "rebuild it with `dvc repro checkpoint`"), quoted in
    every error.
    """
    path = Path(path)
    if not path.is_file():
        raise MpqbenchError(f"{path} does not exist; {fix}")
    expected = recorded_sha256(path)
    if expected is None:
        raise MpqbenchError(f"{path} has no checksum beside it ({checksum_path(path).name}); "
                            f"{fix}")
    actual = sha256_of(path)
    if actual != expected:
        raise MpqbenchError(f"{path} is corrupt: its sha256 is {actual[:12]}..., the one "
                            f"recorded beside it is {expected[:12]}...; {fix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            UnicodeDecodeError, KeyError, zipfile.BadZipFile) as exc:
        raise MpqbenchError(f"{path} is not a readable mpqbench artifact ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); {fix}") from exc
