"""Committed outputs survive a failed, interrupted or orphaned stage (mpqbench/stage_guard.py),
and the params stage refuses a corrupt pinned checkpoint before DVC touches anything."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpqbench.errors import MpqbenchError
from mpqbench.stage_guard import SET_ASIDE, _children, guarded_outputs

from .helpers.pipeline_copy import pipeline_copy

REPO = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


def _committed(root: Path) -> dict[Path, bytes]:
    files = {
        root / "runs/a.json": b'{"run": "a"}\n',
        root / "runs/b.json": b'{"run": "b"}\n',
        root / "out/nb.ipynb": b"{}\n",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _unchanged(files: dict[Path, bytes], root: Path) -> None:
    for path, data in files.items():
        assert path.read_bytes() == data, f"{path} was changed"
    for folder in ("runs", "out"):
        assert sorted(p.name for p in (root / folder).iterdir()) == sorted(
            p.name for p in files if p.parent.name == folder), f"{folder} gained or lost files"


def test_a_failed_run_puts_the_committed_outputs_back_and_keeps_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = _committed(tmp_path)
    with pytest.raises(MpqbenchError, match=r"boom \[the committed outputs are back in place; "
                                            r"what this run wrote is in .set-aside/failed/runs/\]"):
        with guarded_outputs(["runs", "out"]):
            assert not Path("runs").exists()  # the run starts from nothing, as under DVC
            Path("runs").mkdir()
            Path("runs/partial.json").write_text("{}")
            raise MpqbenchError("boom")
    _unchanged(files, tmp_path)
    assert (SET_ASIDE / "failed/runs/runs/partial.json").is_file()


def test_an_interrupt_restores_too_and_a_success_replaces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = _committed(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with guarded_outputs(["runs", "out"]):
            raise KeyboardInterrupt
    _unchanged(files, tmp_path)
    with guarded_outputs(["runs", "out"]):
        Path("runs").mkdir()
        Path("runs/new.json").write_text("{}")
    assert [p.name for p in Path("runs").iterdir()] == ["new.json"]
    assert not Path("out").exists()  # the run wrote none: DVC then reports it missing
    assert not (SET_ASIDE / "runs").exists()


def test_outputs_a_killed_run_left_aside_come_back_first(tmp_path, monkeypatch):
    """`kill -9` skips every handler: the next run of the stage restores before it starts."""
    monkeypatch.chdir(tmp_path)
    files = _committed(tmp_path)
    aside = SET_ASIDE / "runs"
    aside.mkdir(parents=True)
    Path("runs").rename(aside / "runs")
    Path("runs").mkdir()
    Path("runs/half-written.json").write_text("{")
    with pytest.raises(MpqbenchError, match="again"):
        with guarded_outputs(["runs", "out"]):
            raise MpqbenchError("again")
    _unchanged(files, tmp_path)


def test_a_second_run_of_the_same_stage_is_refused_while_one_is_alive(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _committed(tmp_path)
    with guarded_outputs(["runs"]):
        with pytest.raises(MpqbenchError, match=rf"another run of this stage \(pid {os.getpid()}\)"
                                                r" is writing its outputs"):
            with guarded_outputs(["runs"]):
                pass


SLEEPER = '''# %% tags=["parameters"]
runs_dir = "runs"
# %%
import pathlib, time
pathlib.Path(runs_dir).mkdir(parents=True, exist_ok=True)
pathlib.Path("started").write_text("yes")
time.sleep(120)
'''


# DVC runs a stage's command as `$SHELL -c CMD`; bash then replaces itself with the command,
# but a shell may also stay between DVC and the runner (here: a second command after it)
LAUNCHERS = {
    "runner under DVC": "import subprocess, sys, time\nsubprocess.Popen(sys.argv[1:])\n"
                        "time.sleep(300)\n",
    "shell between": "import subprocess, sys, time\nsubprocess.Popen(['bash', '-c', "
                     "' '.join(sys.argv[1:]) + '; echo done'])\ntime.sleep(300)\n",
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_killed_parent_takes_the_runner_and_its_kernel_with_it(tmp_path, launcher):
    """`kill -9` of `dvc repro` used to orphan the runner and its kernel, which kept writing
    beside the next run. A Python process stands in for DVC: it starts the runner (directly,
    or through a shell that stays) and is killed."""
    files = _committed(tmp_path)
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPQBENCH_PROGRESS": "off"}
    shell = subprocess.Popen(
        [sys.executable, "-c", LAUNCHERS[launcher], sys.executable, "-m", "mpqbench",
         "notebook", "sleeper.py", "--out", "out", "--runs", "runs"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "started").exists():
        assert time.time() < deadline, "the notebook never started"
        time.sleep(0.5)
    (runner,) = [pid for pid in _children(shell.pid)
                 if _cmdline(pid)[:1] == [sys.executable] and "notebook" in _cmdline(pid)]
    started = _children(runner)
    assert started, "the runner started no kernel"
    os.kill(shell.pid, signal.SIGKILL)
    shell.wait()
    deadline = time.time() + 60
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)
              for pid in [runner, *started]):
        assert time.time() < deadline, "the runner or its kernel outlived its parent"
        time.sleep(0.5)
    _unchanged(files, tmp_path)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _pipeline_copy(tmp_path: Path) -> dict[str, bytes]:
    """The real dvc.yaml, params.yaml and package in a fresh git + DVC repository, with the
    uniform stage's committed outputs and the pinned checkpoint (one byte flipped)."""
    pipeline_copy(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    for name in ("resnet20.pt", "resnet20.pt.sha256"):
        shutil.copy(REPO / "checkpoints" / name, tmp_path / "checkpoints" / name)
    weights = bytearray((tmp_path / "checkpoints/resnet20.pt").read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (tmp_path / "checkpoints/resnet20.pt").write_bytes(bytes(weights))
    (tmp_path / "data/cifar10").mkdir(parents=True)
    (tmp_path / "data/cifar10/meta.json").write_text("{}")
    committed = {"results/params-check.txt": (REPO / "results/params-check.txt").read_bytes()}
    for folder in ("results/runs/uniform-resnet20", "results/notebooks/uniform-resnet20"):
        for path in sorted((REPO / folder).iterdir()):
            committed[f"{folder}/{path.name}"] = path.read_bytes()
    for rel, data in committed.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return committed


@pytest.mark.parametrize("single", [True, False], ids=["repro -s stage", "repro stage"])
def test_a_flipped_byte_in_the_pinned_checkpoint_removes_no_committed_record(tmp_path, single):
    """With -s the stage itself runs and fails on the checkpoint's checksum, its outputs
    persisted and set aside; without it the params stage refuses first and nothing runs (the
    checkpoint stage would otherwise rebuild the pinned weights)."""
    committed = _pipeline_copy(tmp_path)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(tmp_path), "MPQBENCH_PROGRESS": "off"}
    args = ["repro", "-s", "uniform@resnet20"] if single else ["repro", "uniform@resnet20"]
    result = subprocess.run([DVC, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "checkpoints/resnet20.pt is corrupt" in output
    if not single:
        assert "restore the committed copy with `git checkout -- checkpoints/resnet20.pt" in output
    for rel, data in committed.items():
        assert (tmp_path / rel).is_file(), f"{rel} was removed"
        assert (tmp_path / rel).read_bytes() == data, f"{rel} was changed"
    assert sorted(p.name for p in (tmp_path / "results/runs/uniform-resnet20").iterdir()) == \
        sorted(Path(rel).name for rel in committed if rel.startswith("results/runs/"))


def _with_budget(params_text: str) -> str:
    """params.yaml with the first-order method's first budget out of reach (ResNet-20 reaches
    15.81x at most with 2-bit weights and the fixed layers at 8 bits)."""
    old = "      - {compression_ratio: 8}\n      - {compression_ratio: 10.67}\n"
    assert old in params_text
    return params_text.replace(old, "      - {compression_ratio: 100}\n"
                                    "      - {compression_ratio: 10.67}\n", 1)


def test_preflight_names_the_budget_its_path_and_the_largest_feasible_value():
    from mpqbench.config import load_params
    from mpqbench.params_schema import check_params
    from mpqbench.preflight import budget_uses, preflight

    params = load_params(REPO / "params.yaml")
    check_params(params, REPO)
    preflight(params, REPO)  # the shipped file passes
    wheres = {use.where for use in budget_uses(params)}
    assert {"method_cfg.first_order_ptq.budgets[0]", "method_cfg.limpq.budgets[1]",
            "budgets.W3A3eq", "profiles.quick.policy_bank.budget"} <= wheres
    params["method_cfg"]["first_order_ptq"]["budgets"][0] = {"compression_ratio": 100}
    with pytest.raises(MpqbenchError, match=r"params.yaml method_cfg.first_order_ptq.budgets\[0\] "
                                            r"for resnet20: budget compression_ratio 100x is "
                                            r"infeasible: the largest feasible value is 15.8105x"):
        preflight(params, REPO)


@pytest.mark.parametrize("single", [True, False], ids=["repro -s stage", "repro stage"])
def test_an_infeasible_budget_stops_the_pipeline_before_any_metric_runs(tmp_path, single):
    """It used to pass check-params and fail after 1,039 s of metrics, 19 committed records
    deleted. Now the params stage (or, under -s, the runner) refuses before the notebook starts.
    """
    committed = _pipeline_copy(tmp_path)
    shutil.copy(REPO / "checkpoints/resnet20.pt", tmp_path / "checkpoints/resnet20.pt")  # intact
    for path in sorted((REPO / "results/runs/first_order_ptq-resnet20").iterdir()):
        rel = f"results/runs/first_order_ptq-resnet20/{path.name}"
        committed[rel] = path.read_bytes()
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(committed[rel])
    params = tmp_path / "params.yaml"
    params.write_text(_with_budget(params.read_text()))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(tmp_path), "MPQBENCH_PROGRESS": "off"}
    stage = "first_order_ptq@resnet20"
    args = ["repro", "-s", stage] if single else ["repro", stage]
    result = subprocess.run([DVC, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert ("params.yaml method_cfg.first_order_ptq.budgets[0] for resnet20: budget "
            "compression_ratio 100x is infeasible: the largest feasible value is 15.8105x"
            ) in output
    assert not (tmp_path / SET_ASIDE / "failed").exists(), "the notebook started"
    for rel, data in committed.items():
        assert (tmp_path / rel).read_bytes() == data, f"{rel} was changed or removed"
