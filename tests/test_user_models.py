"""A model the suite does not ship (a BN-free CNN), declared in params.yaml, used by name."""

import hashlib
import shutil
import textwrap

import pytest
import torch
import yaml

from mpqbench.cli import main
from mpqbench.config import load_params
from mpqbench.errors import MpqbenchError
from mpqbench.models.zoo import MODELS, pretrained_model
from mpqbench.params_schema import check_params

from .conftest import REPO

FACTORY = textwrap.dedent('''\
    import torch.nn as nn


    def build(num_classes):
        """A BN-free CNN: three convs, global pooling, a linear classifier."""
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
''')


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A working copy with params.yaml declaring ``tiny_cnn`` and its two files."""
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # registrations stay here
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "user_models").mkdir()
    (tmp_path / "user_models/tiny_cnn.py").write_text(FACTORY)
    torch.manual_seed(0)
    namespace = {}
    exec(FACTORY, namespace)  # noqa: S102 (the test's own factory text)
    weights = namespace["build"](10).state_dict()
    torch.save(weights, tmp_path / "user_models/tiny_cnn.pt")
    digest = hashlib.sha256((tmp_path / "user_models/tiny_cnn.pt").read_bytes()).hexdigest()
    params = load_params(tmp_path / "params.yaml")
    params["models"] = ["resnet20", "tiny_cnn"]
    params["user_models"] = {"tiny_cnn": {"datasets": ["cifar10"], "sha256": digest}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    return tmp_path, weights


def test_a_declared_model_is_registered_and_loads_its_checked_weights(repo):
    root, weights = repo
    check_params(load_params(root / "params.yaml"), root)
    model = pretrained_model("tiny_cnn", "cifar10", 10)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    check_params(load_params(root / "params.yaml"), root)  # registering again changes nothing


def test_the_cli_counts_its_cost_by_name(repo, capsys):
    assert main(["cost", "--model", "tiny_cnn", "--bits", "W4A8", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    # weights by hand: convs 3*8*9, 8*16*9, 16*16*9 and the linear 16*10; the first conv and the
    # last linear at 8 bits, the two middle convs at 4
    first, middle, last = 3 * 8 * 9, 8 * 16 * 9 + 16 * 16 * 9, 16 * 10
    bits = (first + last) * 8 + middle * 4
    assert f"{bits / 8 / 2**20:.4f} MiB weights" in out


@pytest.mark.parametrize("change, message", [
    ("sha", "has sha256 .* params.yaml says 0000"),
    ("factory", "no factory .*tiny_cnn.py"),
    ("shipped", "'resnet20' is a model the suite ships"),
])
def test_each_mistake_names_the_file_and_the_fix(repo, change, message):
    root, _ = repo
    params = load_params(root / "params.yaml")
    if change == "sha":
        params["user_models"]["tiny_cnn"]["sha256"] = "0" * 64
        check_params(params, root)
        with pytest.raises(MpqbenchError, match=message):
            pretrained_model("tiny_cnn", "cifar10", 10)
        return
    if change == "factory":
        (root / "user_models/tiny_cnn.py").unlink()
    else:
        params["user_models"] = {"resnet20": params["user_models"]["tiny_cnn"]}
    with pytest.raises(MpqbenchError, match=message):
        check_params(params, root)


@pytest.mark.slow
def test_the_checkpoint_stage_and_ptq_accept_it_by_name(repo, cifar_cache, capsys):
    """Real data: the checkpoint stage adapts the user's model (smoke schedule), then PTQ of
    it at W4A8 is evaluated on the test images, all by the name declared in params.yaml."""
    root, _ = repo
    (root / "data").symlink_to(cifar_cache)
    assert main(["checkpoint", "--model", "tiny_cnn", "--profile", "smoke"]) == 0
    assert "tiny_cnn on cifar10-jpeg" in capsys.readouterr().out
    assert (root / "checkpoints/tiny_cnn.pt").is_file()
    assert main(["ptq", "--model", "tiny_cnn", "--profile", "smoke", "--bits", "W4A8"]) == 0
    assert "PTQ nearest tiny_cnn: test top-1" in capsys.readouterr().out


def test_list_shows_the_shipped_and_the_user_models(repo, capsys):
    assert main(["list"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "user models: tiny_cnn"
    assert lines[0].startswith("models:") and "resnet20" in lines[0]
    assert "tiny_cnn" not in lines[0]
