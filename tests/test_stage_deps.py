"""Every stage of dvc.yaml depends on exactly the package modules its entry runs."""

from pathlib import Path

import pytest
import yaml

from mpqbench.stage_deps import (
    PLOTTING_ONLY,
    REPORT_STAGE,
    STAGE_ENTRIES,
    add_stage,
    covered,
    import_closure,
    method_stage,
    stage_closure,
    stage_entries,
)

REPO = Path(__file__).resolve().parents[1]


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _entries(stage: str) -> list[str]:
    return stage_entries(stage, REPO)


def _code_deps(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    return [d for d in body["deps"] if isinstance(d, str) and d.startswith("mpqbench")]


def test_every_stage_has_an_entry():
    for stage in _stages():
        assert all((REPO / path).is_file() for path in _entries(stage)), stage
    assert set(STAGE_ENTRIES) <= set(_stages())


def test_a_new_method_stage_is_generated_with_its_exact_dependencies():
    """`python -m mpqbench.stage_deps --new-method NAME` prints what dvc.yaml needs."""
    block = yaml.safe_load("stages:\n" + method_stage("saq", ["results/runs/limpq-${item}"],
                                                      root=REPO))
    generated = block["stages"]["saq"]
    assert generated == _stages()["saq"]  # the committed stage is exactly the generated one
    with pytest.raises(ValueError, match="no entry in STAGE_ENTRIES and no notebooks/nope.py"):
        stage_entries("nope", REPO)


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_stage_deps_cover_the_import_closure_and_nothing_else(stage):
    deps = _code_deps(_stages()[stage])
    needed = {p for p in stage_closure(stage, _entries(stage), REPO) if p.startswith("mpqbench/")}
    missing = sorted(p for p in needed if not covered(p, deps))
    assert not missing, f"{stage}: add to its deps in dvc.yaml: {missing}"
    extra = sorted(d for d in deps if not any(covered(p, [d]) for p in needed))
    assert not extra, f"{stage}: deps its entry never imports (remove them): {extra}"


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_a_plotting_module_is_a_dep_of_the_report_alone(stage):
    """A change to a figure re-runs the report, never a compute stage."""
    deps = _code_deps(_stages()[stage])
    plotting = sorted(p for p in PLOTTING_ONLY if covered(p, deps))
    if stage == REPORT_STAGE:
        assert plotting == sorted(PLOTTING_ONLY)
    else:
        assert not plotting, f"{stage} lists plotting-only modules {plotting}"


def test_plotting_modules_hold_no_records_or_file_writes():
    """What makes them plotting-only: they never save, write or build a RunRecord."""
    for path in PLOTTING_ONLY:
        text = (REPO / path).read_text()
        for word in ("save_run", "write_text", "RunRecord(", "open("):
            assert word not in text, f"{path} uses {word}"


def test_closure_follows_imports_inside_functions_and_packages(tmp_path):
    pkg = tmp_path / "mpqbench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from mpqbench.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "lazy.py").write_text("def f():\n    from mpqbench.sub.leaf import X\n    return X\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "entry.py").write_text("import os\nfrom mpqbench import lazy\n")
    assert import_closure(["entry.py"], tmp_path) == {
        "entry.py", "mpqbench/lazy.py", "mpqbench/sub/__init__.py", "mpqbench/sub/leaf.py"}


def test_a_stage_is_added_inside_the_stages_section(tmp_path):
    path = tmp_path / "dvc.yaml"
    path.write_text("stages:\n  a:\n    cmd: x\n\n# a comment\nplots:\n  - p.csv\n")
    add_stage(path, "  b:\n    cmd: y\n")
    assert yaml.safe_load(path.read_text()) == {"stages": {"a": {"cmd": "x"}, "b": {"cmd": "y"}},
                                                "plots": ["p.csv"]}
    with pytest.raises(ValueError, match="already has a stage 'b'"):
        add_stage(path, "  b:\n    cmd: z\n")
