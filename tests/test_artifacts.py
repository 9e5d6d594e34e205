"""Trained artifacts: a sha256 beside each, checked on every load; every corruption is one
clear error naming the file and the fix, never a silently wrong model."""

import hashlib

import pytest
import torch

from mpqbench.artifacts import checksum_path, load_artifact, save_artifact
from mpqbench.checkpoints import load_fp_model
from mpqbench.errors import MpqbenchError
from mpqbench.models import build_model


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint as the checkpoint stage writes it (random ResNet-20 weights)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    path = tmp_path / "resnet20.pt"
    save_artifact({"state_dict": model.state_dict(),
                   "meta": {"model": "resnet20", "num_classes": 10}}, path)
    return path, model


def test_the_checksum_is_the_files_sha256_and_loads_back_the_same_weights(checkpoint):
    path, model = checkpoint
    assert checksum_path(path).read_text() == (
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  resnet20.pt\n")
    loaded, meta = load_fp_model(path)
    assert meta == {"model": "resnet20", "num_classes": 10}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["header", "tensor data", "truncated", "not torch"])
def test_every_corruption_is_refused_with_the_file_and_the_fix(checkpoint, damage):
    path, _ = checkpoint
    size = path.stat().st_size
    if damage == "header":
        _flip(path, 40)
    elif damage == "tensor data":
        _flip(path, size // 2)  # inside the weights: would load, with a wrong weight
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: size // 3])
    else:
        path.write_text("this is not a checkpoint")
    with pytest.raises(MpqbenchError, match=(
            rf"{path} is corrupt: its sha256 is [0-9a-f]{{12}}\.\.\., the one recorded beside "
            rf"it is [0-9a-f]{{12}}\.\.\.; restore the committed copy with `git checkout -- "
            rf"{path} {path}.sha256`")):
        load_fp_model(path)


def test_a_damaged_file_whose_checksum_was_rewritten_is_still_refused(checkpoint):
    """The sha256 matches (someone re-hashed a bad file): torch's reader is the last guard."""
    path, _ = checkpoint
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    checksum_path(path).write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    with pytest.raises(MpqbenchError, match=f"{path} is not a readable mpqbench artifact"):
        load_fp_model(path)


def test_a_missing_checksum_or_file_names_the_fix(checkpoint, tmp_path):
    path, _ = checkpoint
    checksum_path(path).unlink()
    with pytest.raises(MpqbenchError, match="has no checksum beside it .resnet20.pt.sha256."):
        load_fp_model(path)
    with pytest.raises(MpqbenchError, match="no FP checkpoint at .*; build it with `dvc repro"):
        load_fp_model(tmp_path / "absent.pt")


def test_pickled_code_is_refused(tmp_path):
    """``weights_only=True``: an artifact that would run code on load is not loaded."""
    path = tmp_path / "state.pt"
    torch.save({"hook": print}, path)  # a callable: needs the unsafe unpickler
    checksum_path(path).write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    with pytest.raises(MpqbenchError, match="not a readable mpqbench artifact .UnpicklingError"):
        load_artifact(path, "delete it")


def test_a_wrong_architecture_is_refused(checkpoint):
    path, _ = checkpoint
    blob = load_artifact(path, "")
    blob["meta"]["model"] = "resnet32"  # weights of a ResNet-20 under another name
    save_artifact(blob, path)
    with pytest.raises(MpqbenchError, match="is not a usable mpqbench checkpoint .*Missing key"):
        load_fp_model(path)
