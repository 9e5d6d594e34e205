"""Executors (mpqbench/executors.py): stages in waves through submitit's engines, on a real
DVC pipeline; a real single-node Slurm where one runs (tests/slurm/README.md)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpqbench.errors import MpqbenchError
from mpqbench.executors import Resources, RunRequest, _waves, run_stages

from .conftest import REPO
from .test_scale_out import GRAPH

DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


def test_resources_come_from_the_cluster_config_by_profile(tmp_path):
    quick = Resources.for_profile("quick", REPO / "configs/cluster.yaml")
    assert quick == Resources(cpus_per_task=2, gpus_per_node=0, mem_gb=8, timeout_min=120)
    assert Resources.for_profile("paper", REPO / "configs/cluster.yaml").gpus_per_node == 1
    bad = tmp_path / "cluster.yaml"
    bad.write_text("slurm:\n  quick: {cpus: 2}\n")
    with pytest.raises(MpqbenchError, match="slurm.quick: unknown key 'cpus'; allowed keys: "
                                            "cpus_per_task, gpus_per_node, mem_gb"):
        Resources.for_profile("quick", bad)
    with pytest.raises(MpqbenchError, match=r"no slurm.paper; add the resources of profile "
                                            r"'paper' \(known: quick\)"):
        Resources.for_profile("paper", bad)


def test_waves_keep_the_order_and_stop_below_a_failure():
    submitted = []

    def submit(wave):
        submitted.append(sorted(wave))
        return [1 if stage == "f" else 0 for stage in wave]

    status = _waves(RunRequest(["c", "b", "a", "d", "e", "f"], graph=GRAPH), submit)
    assert status == {"a": 0, "b": 0, "c": 0, "d": 0, "f": 1, "e": -1}
    assert submitted == [["a", "d", "f"], ["b"], ["c"]]


WRITER = """import pathlib, sys
pathlib.Path(sys.argv[2]).write_text(f"{sys.argv[1]} " + "".join(
    pathlib.Path(p).read_text() for p in sys.argv[3:]))
"""


def _toy_repo(root: Path) -> None:
    """A three-stage DVC pipeline (a -> b, c alone) with the cluster config."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    (root / "write.py").write_text(WRITER)
    (root / "configs").mkdir()
    shutil.copy(REPO / "configs/cluster.yaml", root / "configs/cluster.yaml")
    py = sys.executable
    (root / "dvc.yaml").write_text(
        "stages:\n"
        f"  a: {{cmd: {py} write.py a out/a.txt, deps: [write.py], outs: [out/a.txt]}}\n"
        f"  b: {{cmd: {py} write.py b out/b.txt out/a.txt, deps: [write.py, out/a.txt], "
        "outs: [out/b.txt]}\n"
        f"  c: {{cmd: {py} write.py c out/c.txt, deps: [write.py], outs: [out/c.txt]}}\n")
    (root / "out").mkdir()


def _slurm_answers() -> bool:
    """A controller answers `sinfo` (no sinfo, or none within 15 s: no)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.parametrize("executor", ["submitit-local", "slurm"])
def test_stages_run_as_job_arrays_and_dvc_records_them(tmp_path, monkeypatch, executor):
    """Each wave is one job array; every job runs `dvc repro -s` in the shared checkout, so
    DVC's own lock file ends as after a serial `dvc repro`: nothing left to run."""
    if executor == "slurm" and not _slurm_answers():
        pytest.skip("no Slurm controller answers here: start one with tests/slurm/start.sh "
                    "(by hand; CI has none, see tests/slurm/README.md)")
    _toy_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the jobs unpickle mpqbench's StageJob
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    status = run_stages(executor, RunRequest(["b", "a", "c"], str(tmp_path), 2, "smoke"))
    assert status == {"a": 0, "b": 0, "c": 0}
    assert (tmp_path / "out/b.txt").read_text() == "b a "
    done = subprocess.run([DVC, "status"], cwd=tmp_path, capture_output=True, text=True)
    assert "up to date" in done.stdout, done.stdout
    logs = list((tmp_path / ".submitit").rglob("*_result.pkl"))
    assert len(logs) == 3  # three jobs: two arrays (a and c, then b)
