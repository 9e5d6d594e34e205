"""Parallel stage workers (mpqbench/scale_out.py): the order and overlap with a stand-in for
dvc, and the real DVC pipeline with 2 workers on the smoke profile."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpqbench.scale_out import run_parallel, upstream_within

from .conftest import mirror_path
from .test_pipeline import _copy_repo, _run

# a -> b -> c (c needs b needs a); d alone; e needs the failing f
GRAPH = {"a": set(), "b": {"a"}, "c": {"b"}, "d": set(), "f": set(), "e": {"f"}}


def _fake_dvc(tmp_path: Path, fail: str = "f") -> str:
    """A stand-in for ``dvc``: logs ``start`` and ``end`` of the stage it is asked to repro,
    sleeps 0.3 s, and fails for stage ``fail``."""
    script = tmp_path / "dvc"
    script.write_text(f"""#!/bin/sh
stage="$4"
echo "start $stage" >> {tmp_path}/order
sleep 0.3
echo "end $stage" >> {tmp_path}/order
[ "$stage" != "{fail}" ]
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_upstream_is_transitive_and_limited_to_the_stages_asked_for():
    assert upstream_within(GRAPH, ["a", "c", "d"]) == {"a": set(), "c": {"a"}, "d": set()}


def test_workers_overlap_keep_the_order_and_stop_below_a_failure(tmp_path):
    dvc = _fake_dvc(tmp_path)
    status = run_parallel(["c", "b", "a", "d", "e", "f"], 2, tmp_path, tmp_path / "log",
                          dvc=dvc, graph=GRAPH)
    assert status == {"a": 0, "b": 0, "c": 0, "d": 0, "f": 1, "e": -1}
    order = (tmp_path / "order").read_text().split("\n")
    pos = {line: i for i, line in enumerate(order)}
    assert pos["end a"] < pos["start b"] and pos["end b"] < pos["start c"]
    assert "start e" not in pos  # its upstream failed: never started
    # two stages ran at once: one started before another ended
    spans = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert any(x["start"] < y["start"] < x["end"] for x in spans for y in spans if x is not y)
    assert max(sum(x["start"] <= y["start"] < x["end"] for x in spans) for y in spans) <= 2


@pytest.mark.slow
def test_two_workers_run_grid_stages_through_dvc(tmp_path):
    """Two workers, one workspace: the grid stages of two allocators run through `dvc repro
    -s`, overlap in time, and leave dvc.lock as a serial run would (nothing left to run)."""
    if mirror_path() is None:
        pytest.skip("needs MPQBENCH_MIRROR")
    repo = tmp_path / "repo"
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MPQBENCH_MIRROR": str(mirror_path()), "MPQBENCH_PROGRESS": "off",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(git + ["init", "-q"], repo, env)
    _run(git + ["add", "-A"], repo, env)
    _run(git + ["commit", "-qm", "copy"], repo, env)
    _run(["dvc", "repro", "limpq"], repo, env)  # every allocate stage reads its records
    stages = [f"{kind}@{name}-resnet20" for name in ("uniform", "first_order")
              for kind in ("allocate",)] + [
        f"evaluate@{name}-{p}-resnet20" for name in ("uniform", "first_order")
        for p in ("ptq-nearest", "qat_lsq")]
    log = tmp_path / "log"
    done = subprocess.run([sys.executable, "-m", "mpqbench.scale_out", "-j", "2", "--log",
                           str(log), *stages], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    assert {s["stage"] for s in spans} == set(stages)
    assert any(x["start"] < y["start"] < x["end"] for x in spans for y in spans if x is not y)
    for name in ("uniform", "first_order"):
        cells = (repo / f"results/grid/runs/{name}-ptq-nearest-resnet20/cells.jsonl")
        assert cells.is_file()
    status = _run(["dvc", "status", *stages], repo, env)
    assert "up to date" in status, status
