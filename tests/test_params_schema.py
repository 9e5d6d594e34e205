"""params.yaml checked whole before any compute: every key path, type and name."""

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpqbench.config import load_params, load_yaml
from mpqbench.errors import MpqbenchError
from mpqbench.overlay import apply_overlay
from mpqbench.params_schema import check_params

from .helpers.pipeline_copy import pipeline_copy

REPO = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def _set(params, dotted, value):
    edited = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = edited
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return edited


DELETE = object()

CASES = [  # (key path, value, message)
    ("profile", "quikc", "profile: unknown profile 'quikc'; allowed: paper, quick, smoke"),
    ("seeds", 3, "unknown key 'seeds' .value 3.; allowed keys: budgets, data, dataset, "
     "fix_first_last"),
    ("grid.cells.qat_lsq.budgets", ["W5A5eq"], "grid.cells.qat_lsq.budgets: unknown budget "
     "'W5A5eq'; declare it under budgets:"),
    ("grid.cells.ptq-nearest.seeds", {"quik": 3}, "grid.cells.ptq-nearest.seeds: unknown "
     "profile 'quik'"),
    ("grid.cells.ptq-nearest.seeds", {"quick": 0}, "seeds.quick = 0: at least 1 seed"),
    ("grid.cells.qat_saq.cut", {"quick": ["limpqq"]}, "cut.quick: 'limpqq' is not in "
     "grid.allocators"),
    ("grid.cells.qat_saq.cut", {"quick": ["limpq@size10.67x"]}, "cut.quick: "
     "'limpq@size10.67x' names budget 'size10.67x', not one of this protocol's budgets"),
    ("grid.cells.qat_saq.cut", {"quick": ["limpqq@W4A4eq"]}, "cut.quick: 'limpqq' is not in "
     "grid.allocators"),
    ("grid.cells.qat_lsq.only", {"size10.67x": ["limpq"]}, "grid.cells.qat_lsq.only: "
     "'size10.67x' is not one of this protocol's budgets"),
    ("grid.cells.qat_lsq.only", {"size8x": ["limpqq"]}, "grid.cells.qat_lsq.only.size8x: "
     "'limpqq' is not in grid.allocators"),
    ("grid.cells.qat_lsd", {"budgets": [], "seeds": {}}, "grid.cells.qat_lsd: unknown protocol "
     "'qat_lsd'"),
    ("grid.allocators", ["uniform", "uniform"], "grid.allocators lists a name twice"),
    ("budgets.size8x", {"ratio": 8}, "budgets.size8x: unknown key 'ratio'"),
    ("profiles.quick.qat.lr_mn", 0.1,
     "profiles.quick.qat: unknown key 'lr_mn' .value 0.1.; allowed keys: batch_size, "
     "checkpoint_every"),
    ("profiles.quick.qat.epochs", "one", "profiles.quick.qat.epochs = 'one' must be an integer"),
    ("profiles.quick.eval", {"max_images": None},
     "profiles.quick.eval: missing key 'batch_size'"),
    ("profiles.quick.ptq.weight_observr", "mse", "profiles.quick.ptq: unknown key "
     "'weight_observr'"),
    ("profiles.quick.sensitivity", {"hessian": {"max_iters": 3}},
     "profiles.quick.sensitivity.hessian: unknown metric 'hessian'; allowed: first_order"),
    ("profiles.quick.sensitivity", {"hessian_trace": {"max_iter": 3}},
     "profiles.quick.sensitivity.hessian_trace: unknown key 'max_iter'"),
    ("profiles.quick.policy_bank.budget", {"compression_ratio": -8},
     "profiles.quick.policy_bank.budget: budget compression_ratio must be a finite positive"),
    ("profiles.quick.policy_bank.budget", {"ratio": 8},
     "profiles.quick.policy_bank.budget: unknown key 'ratio'"),
    ("models", ["resnet21"], "models\\[0\\]: unknown model 'resnet21'; allowed: "),
    ("dataset", "cifar1000", "dataset: unknown dataset 'cifar1000'; allowed: cifar10"),
    ("method_cfg.first_order_ptq.rounding", "stochastic",
     "method_cfg.first_order_ptq.rounding: unknown rounding 'stochastic'; allowed: adaround, "
     "nearest"),
    ("method_cfg.first_order_ptq.solver", "gurobi",
     "method_cfg.first_order_ptq.solver: unknown solver 'gurobi'; allowed: ilp, ilp-cbc"),
    ("method_cfg.data_free.synth.zeroq.lrr", 0.5,
     "method_cfg.data_free.synth.zeroq: unknown key 'lrr'"),
    ("method_cfg.data_free.synth.gan", {}, "method_cfg.data_free.synth.gan: unknown "
     "generator 'gan'; allowed: labeled, labeled_bn, zeroq"),
    ("method_cfg.data_free.allocate", ["task_loss"], "allocate names table 'task_loss'"),
    ("method_cfg.limpq.budgets", [{"bitops_equiv": "4bit"}],
     "method_cfg.limpq.budgets\\[0\\]: bit pair '4bit' must look like 'W4A4'"),
    ("method_cfg.saq.perturb_space", "weights", "unknown perturbation space 'weights'"),
    ("method_cfg.uniform.configs", ["W4A8", "W4"], "method_cfg.uniform.configs\\[1\\]: bit "
     "pair 'W4' must look like"),
    ("runs", {"saq-resnet20": {}}, "runs: is gone; each method has its own stage in dvc.yaml"),
    ("profiles.quick.qat", {"lr": 0.1}, "profiles.quick.qat: missing key 'epochs'"),
    ("fix_first_last", "yes", "fix_first_last = 'yes' must be true or false"),
]


def test_the_committed_params_pass(params):
    check_params(params, REPO)


@pytest.mark.parametrize("path, value, message", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_names_its_key_path_and_what_is_allowed(params, path, value, message):
    with pytest.raises(MpqbenchError, match=message):
        check_params(_set(params, path, value), REPO)


def test_a_profile_without_a_section_it_needs_is_refused(params):
    with pytest.raises(MpqbenchError, match="profiles.smoke: missing key 'eval'"):
        check_params(_set(params, "profiles.smoke.eval", DELETE), REPO)


def test_a_new_config_field_is_allowed_without_editing_the_schema(params):
    """The typed configs are the schema: every PtqConfig field is a valid key."""
    check_params(_set(params, "profiles.quick.ptq.adaround_warmup", 0.1), REPO)
    with pytest.raises(MpqbenchError, match="adaround_warmup = 'x' must be a number"):
        check_params(_set(params, "profiles.quick.ptq.adaround_warmup", "x"), REPO)


def test_the_imagenet_overlay_passes(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    for split in ("train", "val"):
        (tmp_path / split / "n01440764").mkdir(parents=True)
    apply_overlay(tmp_path / "params.yaml", REPO / "configs" / "imagenet.yaml",
                  [f"imagenet_root={tmp_path}"])
    check_params(load_yaml((tmp_path / "params.yaml").read_text()), tmp_path)


def test_a_profile_typo_under_dvc_repro_stops_before_any_output_is_removed(tmp_path):
    """The params stage runs first: `dvc repro checkpoint@resnet20` with `profile: quikc`
    fails there, and the checkpoint stage's committed outputs stay where they are."""
    pipeline_copy(tmp_path)
    committed = {
        "results/metrics/checkpoint-resnet20.json": '{"test_top1": 87.67}\n',
        "checkpoints/resnet20.pt": "weights",
        "results/params-check.txt": "params.yaml passed\n",
    }
    for path, text in committed.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    params = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params.replace("profile: quick", "profile: quikc", 1))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([DVC, "repro", "checkpoint@resnet20"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown profile 'quikc'; allowed: paper, quick, smoke" in result.stdout + result.stderr
    for path, text in committed.items():
        assert (tmp_path / path).read_text() == text, f"{path} was changed or removed"


def test_a_method_added_as_a_notebook_may_bring_its_own_settings(params, tmp_path):
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    (tmp_path / "notebooks" / "my_method.py").write_text("# a new method\n")
    added = _set(params, "method_cfg.my_method", {"anything": [1, 2]})
    check_params(added, tmp_path)
    with pytest.raises(MpqbenchError, match="method_cfg: unknown key 'my_methd'"):
        check_params(_set(params, "method_cfg.my_methd", {}), tmp_path)  # no such notebook
