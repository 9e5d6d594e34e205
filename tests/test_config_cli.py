import subprocess
import sys

import pytest

from mpqbench.cli import main
from mpqbench.config import load_params, profile_settings
from mpqbench.errors import MpqbenchError

from .conftest import REPO


def test_profiles_merge_over_the_global_keys():
    params = load_params(REPO / "params.yaml")
    assert {"smoke", "quick", "paper"} <= set(params["profiles"])
    smoke = profile_settings("smoke", params)
    assert smoke["profile"] == "smoke" and smoke["dataset"] == "cifar10"
    assert smoke["finetune"]["epochs"]["cifar10"] == 0
    with pytest.raises(MpqbenchError, match="unknown profile 'fast'; known: paper, quick, smoke"):
        profile_settings("fast", params)
    with pytest.raises(MpqbenchError, match="params file .* not found"):
        load_params(REPO / "nope.yaml")


def test_help_lists_the_stage_commands():
    out = subprocess.run([sys.executable, "-m", "mpqbench", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("data", "checkpoint", "notebook", "report", "list"):
        assert command in out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["data", "--dataset", "mnist", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'mnist'; known: cifar10" in capsys.readouterr().err
    assert main(["checkpoint", "--model", "resnet20", "--profile", "fast"]) == 2
    assert "unknown profile 'fast'" in capsys.readouterr().err
    assert main(["checkpoint", "--model", "vgg", "--profile", "smoke",
                 "--data-dir", str(tmp_path)]) == 2
    assert "unknown model 'vgg'; known: mobilenet_v2, resnet18" in capsys.readouterr().err
    assert main(["checkpoint", "--model", "resnet20", "--profile", "smoke",
                 "--data-dir", str(tmp_path)]) == 2
    assert "no prepared dataset" in capsys.readouterr().err


def test_list_names_every_registry_and_the_runs_of_params(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["list"]) in (0, None)
    out = capsys.readouterr().out
    assert "metrics:     first_order, fisher_fit, hessian_trace, task_loss, zeroq_kl" in out
    assert "solvers:     ilp, ilp-cbc, pareto, random, uniform" in out
    assert "roundings:   adaround, nearest" in out
    assert "first_order_ptq-resnet20" in out.splitlines()[-1]


@pytest.mark.parametrize("command", [["policy-bank"], ["qat", "--bits", "W4A4", "--out", "x.pt"],
                                     ["limpq-indicators", "--out", "x.csv"]])
def test_an_unknown_model_is_named_before_any_checkpoint_lookup(command, capsys, monkeypatch):
    """It used to be reported as a missing checkpoint, with advice to build one."""
    monkeypatch.chdir(REPO)
    assert main([*command, "--model", "resnet_20", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet_20'" in err and "checkpoint" not in err
