"""Suite overlays: configs/imagenet.yaml laid over params.yaml."""

import shutil

import pytest
import yaml

from mpqbench.checkpoints import finetune_config
from mpqbench.config import profile_settings
from mpqbench.errors import MpqbenchError
from mpqbench.overlay import apply_overlay, parse_set

from .conftest import REPO

IMAGENET = REPO / "configs/imagenet.yaml"


@pytest.fixture
def repo(tmp_path):
    """params.yaml and the notebooks, copied; an empty ImageNet-shaped folder beside them."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    for part in ("train", "val"):
        (tmp_path / "imagenet" / part / "n01440764").mkdir(parents=True)
    return tmp_path


def test_imagenet_overlay_switches_the_suite_and_keeps_comments(repo):
    before = yaml.safe_load((repo / "params.yaml").read_text())
    changed = apply_overlay(repo / "params.yaml", IMAGENET,
                            [f"imagenet_root={repo / 'imagenet'}"])
    text = (repo / "params.yaml").read_text()
    after = yaml.safe_load(text)
    assert "# The active profile" in text and "# Per-method settings" in text
    assert after["dataset"] == "imagenet" and after["profile"] == "paper"
    assert after["imagenet_root"] == str(repo / "imagenet")
    assert after["models"] == ["resnet18", "resnet50", "mobilenet_v2"]
    # merged, not replaced: the rest of data, every method setting and profile stay
    assert after["data"] == {**before["data"], "val_size": 10000}
    assert after["method_cfg"] == before["method_cfg"] and after["profiles"] == before["profiles"]
    assert {"dataset", "profile", "imagenet_root", "models", "data.val_size"} <= set(changed)
    # the paper profile has an ImageNet schedule (published torchvision weights, no adaptation)
    assert finetune_config(profile_settings("paper", after), "imagenet").epochs == 0
    # SAQ's mixed policy comes from a method whose notebook runs for every model
    source = after["method_cfg"]["saq"]["mixed_policy"]
    assert (REPO / "notebooks" / f"{source['method']}.py").is_file()


@pytest.mark.parametrize("sets, message", [
    ([], "imagenet_root"),
    (["imagenet_root=/nonexistent/imagenet"], "is not a folder"),
    (["imagenet_root={root}", "models=[resnet20, resnet18, resnet50, mobilenet_v2]"],
     "pretrained weights for cifar10"),
    (["imagenet_root={root}", "profile=fast"], "profile 'fast'"),
    (["imagenet_root"], "KEY=VALUE"),
    (["imagenet_root={root}", "data..val_size=3"], "KEY=VALUE"),
    (["imagenet_root={root}", "models=[resnet18"], "not YAML"),
    (["imagenet_root={root}", "models=resnet18"], "models = 'resnet18' must be"),
])
def test_a_bad_overlay_names_the_fix_and_leaves_params_alone(repo, sets, message):
    original = (repo / "params.yaml").read_bytes()
    sets = [s.format(root=repo / "imagenet") for s in sets]
    with pytest.raises(MpqbenchError, match=message):
        apply_overlay(repo / "params.yaml", IMAGENET, sets)
    assert (repo / "params.yaml").read_bytes() == original


def test_set_values_are_yaml_and_dotted_keys_nest():
    assert parse_set("data.val_size=200") == (["data", "val_size"], 200)
    assert parse_set("models=[a, b]") == (["models"], ["a", "b"])
    assert parse_set("imagenet_root=null") == (["imagenet_root"], None)


def test_dvc_resolves_every_stage_of_the_imagenet_suite(repo):
    """The whole overlay (three models, four methods) templated by DVC itself."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    apply_overlay(repo / "params.yaml", IMAGENET, [f"imagenet_root={repo / 'imagenet'}"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=repo, env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    models = ["resnet18", "resnet50", "mobilenet_v2"]
    methods = ["first_order_ptq", "data_free", "limpq", "saq"]
    expected = {"params", "data", "report"} | {f"{stage}@{m}" for m in models for stage in (
        "checkpoint", "fp_baseline", "uniform", "policy_bank", *methods)}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    allocators, protocols = params["grid"]["allocators"], list(params["grid"]["cells"])
    expected |= {f"allocate@{a}-{m}" for a in allocators for m in models}
    expected |= {f"evaluate@{a}-{p}-{m}" for a in allocators for p in protocols for m in models}
    assert set(listed) == expected
    upstream = subprocess.run(["dvc", "dag", "--dot", "saq@resnet50"], cwd=repo, env=env,
                              capture_output=True, text=True, check=True).stdout
    # SAQ's upstream is its own model's LIMPQ run (what its stage reads), not another's
    assert '"limpq@resnet50"' in upstream and "limpq@resnet18" not in upstream
    assert '"checkpoint@resnet50"' in upstream and '"data"' in upstream


@pytest.mark.parametrize("text, message", [
    ("profile: [paper\n", "not valid YAML"),
    ("- a list\n", "must hold a mapping"),
    ("replace: models\nprofile: paper\n", "must list keys"),
])
def test_a_malformed_overlay_file_is_refused(repo, text, message):
    original = (repo / "params.yaml").read_bytes()
    (repo / "bad.yaml").write_text(text)
    with pytest.raises(MpqbenchError, match=message):
        apply_overlay(repo / "params.yaml", repo / "bad.yaml")
    assert (repo / "params.yaml").read_bytes() == original
