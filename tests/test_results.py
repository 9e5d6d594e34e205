import json
from pathlib import Path

import pytest
import torch

from mpqbench.errors import MpqbenchError
from mpqbench.report import summary_table, write_summary
from mpqbench.results import RunRecord, load_runs, provenance, save_run

COST = {"size_mib": 1.0, "bitops_g": 2.0, "compression_ratio": 8.0, "mean_w_bits": 4.0,
        "mean_a_bits": 8.0}
ACC = {"fp_top1": 88.0, "top1": 87.5, "top5": 99.0, "drop": 0.5}


def _record(run_id="uniform-w4a8", **kw):
    return RunRecord(run_id=run_id, method="uniform", model="resnet20", dataset="cifar10",
                     dataset_variant="cifar10-jpeg", protocol="ptq", cost=dict(COST),
                     accuracy=dict(ACC), provenance=provenance(0, "smoke", "cpu"), **kw)


def test_round_trip_and_provenance(tmp_path):
    record = _record(policy={"layer1.0.conv1": {"w_bits": 4, "a_bits": 8}})
    path = save_run(record, tmp_path)
    assert path.name == "uniform-w4a8.json"
    (loaded,) = load_runs(tmp_path)
    assert loaded == record
    prov = loaded.provenance
    assert prov["seed"] == 0 and prov["profile"] == "smoke" and prov["device"].startswith("cpu")
    assert prov["versions"]["torch"] and prov["versions"]["python"]
    assert "git_commit" in prov and "created_utc" in prov
    # the CPU model and torch's kernel ISA, as /proc/cpuinfo and torch report them
    assert prov["cpu"].endswith(f"({torch.backends.cpu.get_cpu_capability()})")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        assert not names or prov["cpu"].startswith(names[0])


def test_invalid_records_are_refused_with_the_file_named(tmp_path):
    bad = _record().to_dict()
    del bad["accuracy"]["drop"]
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(MpqbenchError, match=r"a.json: accuracy lacks \['drop'\]"):
        load_runs(tmp_path)
    old = _record().to_dict() | {"schema_version": 0}
    (tmp_path / "a.json").write_text(json.dumps(old))
    with pytest.raises(MpqbenchError, match="schema_version 0"):
        load_runs(tmp_path)
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(MpqbenchError, match="not valid JSON"):
        load_runs(tmp_path)
    with pytest.raises(MpqbenchError, match="lacks"):
        save_run(RunRecord("x", "m", "r", "d", "v", "p"), tmp_path)


def test_summary_has_one_row_per_run(tmp_path):
    save_run(_record("b"), tmp_path / "runs" / "s1")
    save_run(_record("a"), tmp_path / "runs" / "s2")
    df = write_summary(tmp_path / "runs", tmp_path / "out")
    assert df["run_id"].tolist() == ["a", "b"]
    assert df["cpu"].tolist() == [provenance(0, "smoke", "cpu")["cpu"]] * 2  # shown, not only kept
    assert (tmp_path / "out" / "summary.csv").read_text().count("\n") == 3
    assert "| a | uniform |" in (tmp_path / "out" / "summary.md").read_text()
    assert summary_table([]).empty
    assert "One row per RunRecord under `" + (tmp_path / "runs").as_posix() in (
        tmp_path / "out" / "summary.md").read_text()  # the folder given, not a fixed one
    (tmp_path / "none").mkdir()
    empty = write_summary(tmp_path / "none", tmp_path / "out2")
    assert empty.empty and "No RunRecords" in (tmp_path / "out2" / "summary.md").read_text()
    with pytest.raises(MpqbenchError, match="no RunRecord folder at .*runz; run the pipeline"):
        write_summary(tmp_path / "runz", tmp_path / "out3")  # a typo is an error, not 0 rows


def test_git_state_ignores_pipeline_outputs_but_not_code(tmp_path):
    import subprocess

    from mpqbench.results import git_state

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run(git + args, cwd=tmp_path, check=True)
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "results" / "run.json").write_text('{"a": 1}')
    state = git_state(tmp_path)
    assert state["git_dirty"] is False and len(state["git_commit"]) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["git_dirty"] is True


def test_find_run_by_id_or_none(tmp_path):
    from mpqbench.results import find_run

    save_run(_record("a"), tmp_path / "m")
    save_run(_record("b"), tmp_path / "m")
    assert find_run(tmp_path / "m", "b").run_id == "b"
    assert find_run(tmp_path / "m", "c") is None
    assert find_run(tmp_path / "absent", "a") is None


def test_plot_data_is_one_loss_csv_per_trained_run(tmp_path):
    from mpqbench.report import write_plot_data

    curve = [{"epoch": 1.0, "loss": 2.5, "seconds": 0.4, "step": 1.0},
             {"epoch": 1.0, "loss": 1.25, "seconds": 0.4, "step": 5.0}]
    runs = [_record("qat-a", extra={"loss_curve": curve}), _record("ptq-b")]
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "gone.csv").write_text("step,loss\n")  # from a run no longer there
    written = write_plot_data(runs, tmp_path)
    assert [p.name for p in written] == ["qat-a.csv"]
    assert (tmp_path / "loss" / "qat-a.csv").read_text() == "step,loss\n1,2.5\n5,1.25\n"
    assert not (tmp_path / "loss" / "gone.csv").exists()
