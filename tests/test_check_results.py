"""make check-results against real DVC: a tiny pipeline run by `dvc repro`, then edited."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpqbench.check_results import check

DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")

WRITER = """import json, pathlib, sys
out = pathlib.Path("results/runs/toy-a"); out.mkdir(parents=True, exist_ok=True)
scale = float(sys.argv[1])
for i in range(2):
    rec = {"run_id": f"toy-{i}", "top1": scale * i, "provenance": {"cpu": "test CPU"}}
    (out / f"toy-{i}.json").write_text(json.dumps(rec))
"""


def _run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _run(["git", "init", "-q"], tmp_path)
    _run(["git", "config", "user.email", "t@t"], tmp_path)
    _run(["git", "config", "user.name", "t"], tmp_path)
    _run([DVC, "init", "-q"], tmp_path)
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "params.yaml").write_text("scale: 1.5\nitems: [a]\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  toy:\n    foreach: ${items}\n    do:\n"
        f"      cmd: {sys.executable} writer.py ${{scale}}\n"
        "      deps: [writer.py]\n      params: [scale]\n"
        "      outs:\n        - results/runs/toy-${item}:\n            cache: false\n")
    _run([DVC, "repro", "-q"], tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-qm", "run"], tmp_path)
    return tmp_path


def test_a_fresh_run_is_clean(repo):
    result = check(repo)
    assert result.ok and not result.stale, result.report()


def test_a_changed_dependency_or_param_is_stale_but_not_a_failure(repo):
    (repo / "writer.py").write_text(WRITER + "\n# a comment\n")
    (repo / "params.yaml").write_text("scale: 2.0\nitems: [a]\n")
    result = check(repo)
    assert result.ok
    assert result.stale == {"toy@a": ["writer.py", "param scale"]}


def test_a_hand_edited_record_fails(repo):
    record = repo / "results/runs/toy-a/toy-1.json"
    record.write_text(record.read_text().replace("1.5", "1.6"))
    result = check(repo)
    assert not result.ok
    assert "results/runs/toy-a (toy@a) does not have the hash dvc.lock records" in result.report()


def test_records_no_stage_produced_and_records_without_a_cpu_fail(repo):
    stray = repo / "results/runs/old-run"
    stray.mkdir()
    (stray / "r.json").write_text(json.dumps({"provenance": {"cpu": "x"}}))
    rec = repo / "results/runs/toy-a/toy-0.json"
    rec.write_text(json.dumps({"run_id": "toy-0", "provenance": {"cpu": ""}}))
    report = check(repo).report()
    assert "results/runs/old-run: RunRecords no locked stage produced" in report
    assert "toy-0.json does not name its CPU" in report


def test_a_declared_stage_never_run_is_stale(repo):
    (repo / "params.yaml").write_text("scale: 1.5\nitems: [a, b]\n")
    assert check(repo).stale == {"toy@b": ["never run (not in dvc.lock)"]}


def test_records_without_a_cpu_in_a_stale_stage_are_listed_not_failed(repo):
    rec = repo / "results/runs/toy-a/toy-0.json"
    rec.write_text(json.dumps({"run_id": "toy-0", "provenance": {}}))
    _run([DVC, "commit", "-f", "-q"], repo)  # the lock now records the edited folder
    (repo / "params.yaml").write_text("scale: 3.0\nitems: [a]\n")  # the stage is stale
    result = check(repo)
    assert result.ok, result.report()
    assert result.stale["toy@a"] == ["param scale", "records without provenance.cpu"]


def test_outside_a_repository_is_a_clear_error(tmp_path, capsys):
    from mpqbench.check_results import main

    assert main([str(tmp_path)]) == 2
    assert "has no dvc.lock, dvc.yaml, params.yaml; run it from the repository root" in (
        capsys.readouterr().err)
