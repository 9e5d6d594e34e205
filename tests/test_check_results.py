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
    top1 = 10 * scale + i
    rec = {"run_id": f"toy-{i}", "method": "toy", "model": "m", "dataset": "d",
           "dataset_variant": "d", "protocol": "ptq", "schema_version": 1,
           "accuracy": {"fp_top1": 90.0, "top1": top1, "top5": 99.0, "drop": 90.0 - top1},
           "cost": {"size_mib": 0.1, "bitops_g": 1.0, "compression_ratio": 8.0,
                    "mean_w_bits": 4.0, "mean_a_bits": 8.0},
           "provenance": {"cpu": "test CPU", "seed": i, "versions": {"torch": "2"},
                          "git_commit": "0123456789abcdef0123456789abcdef01234567"}}
    (out / f"toy-{i}.json").write_text(json.dumps(rec))
"""


def _edit(path, edit):
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


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
    record.write_text(record.read_text().replace("99.0", "98.0"))
    result = check(repo)
    assert not result.ok
    assert "results/runs/toy-a (toy@a) does not have the hash dvc.lock records" in result.report()
    assert "restore it with `git checkout -- results/runs/toy-a`" in result.report()


def test_records_no_stage_produced_and_records_without_a_cpu_fail(repo):
    stray = repo / "results/runs/old-run"
    stray.mkdir()
    (stray / "r.json").write_text(json.dumps({"provenance": {"cpu": "x"}}))
    _edit(repo / "results/runs/toy-a/toy-0.json", lambda r: r["provenance"].update(cpu=""))
    report = check(repo).report()
    assert "results/runs/old-run: RunRecords no locked stage produced" in report
    assert "toy-0.json: provenance names no cpu or no package versions" in report


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["accuracy"].update(top1=150.0, drop=-60.0),
     "accuracy.top1 = 150.0 is not a percentage in 0..100"),
    (lambda r: r["accuracy"].update(top5=float("nan")),
     "accuracy.top5 = nan is not a percentage in 0..100"),
    (lambda r: r["accuracy"].update(drop=3.0), "accuracy.drop = 3.0 is not fp_top1 - top1"),
    (lambda r: r["cost"].update(size_mib=-5), "cost.size_mib = -5 is not a positive finite"),
    (lambda r: r.update(provenance={}), "provenance lacks ['git_commit', 'cpu', 'seed', "),
    (lambda r: r["provenance"].update(git_commit=None), "provenance.git_commit = None names no"),
    (lambda r: r.update(policy={"layers": {"conv": {"w_bits": 4}}, "bit_candidates": [4]}),
     "a field of the wrong shape (KeyError: 'a_bits')"),
    (lambda r: r.update(policy={"bit_candidates": [2, 4], "fixed": [], "layers": {
        "conv": {"w_bits": 16, "a_bits": 8}}}),
     "policy: layer 'conv' has w_bits = 16, outside the policy's bit_candidates"),
])
def test_a_forged_record_committed_with_dvc_commit_fails(repo, edit, message):
    """A hand edit that `dvc commit` re-locks has the lock's hash: only validation finds it,
    and `python -m mpqbench.check_results` (what `make check-results` runs) exits 1."""
    _edit(repo / "results/runs/toy-a/toy-1.json", edit)
    _run([DVC, "commit", "-f", "-q"], repo)
    _run(["git", "commit", "-qam", "forged"], repo)
    result = check(repo)
    assert not result.ok
    assert f"results/runs/toy-a/toy-1.json: {message}" in result.report()
    done = subprocess.run([sys.executable, "-m", "mpqbench.check_results", str(repo)],
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr


def test_a_declared_stage_never_run_is_stale(repo):
    (repo / "params.yaml").write_text("scale: 1.5\nitems: [a, b]\n")
    assert check(repo).stale == {"toy@b": ["never run (not in dvc.lock)"]}


def test_records_without_a_cpu_in_a_stale_stage_are_listed_not_failed(repo):
    _edit(repo / "results/runs/toy-a/toy-0.json", lambda r: r.update(provenance={}))
    _run([DVC, "commit", "-f", "-q"], repo)  # the lock now records the edited folder
    (repo / "params.yaml").write_text("scale: 3.0\nitems: [a]\n")  # the stage is stale
    result = check(repo)
    assert result.ok, result.report()
    assert result.stale["toy@a"] == ["param scale", "records that do not validate"]


def test_outside_a_repository_is_a_clear_error(tmp_path, capsys):
    from mpqbench.check_results import main

    assert main([str(tmp_path)]) == 2
    assert "has no dvc.lock, dvc.yaml, params.yaml; run it from the repository root" in (
        capsys.readouterr().err)
