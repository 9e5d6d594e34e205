"""Which package modules each pipeline stage runs: the import closure of its entry.

A stage's code dependencies in ``dvc.yaml`` must cover the modules its entry point imports,
directly or through other modules (imports inside functions included), so that a change to
any of them re-runs the stage, and they should hold nothing else, so that a change elsewhere
does not. ``tests/test_stage_deps.py`` checks every stage of ``dvc.yaml`` against this, and
``python -m mpqbench.stage_deps`` prints the closure of each stage's entry.

Not counted: ``mpqbench/__init__.py`` (a version string), ``mpqbench/cli.py`` and
``mpqbench/__main__.py`` (argument parsing; each command imports the module that does its
work, and that module's closure is what is checked).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from mpqbench.config import load_yaml

EXEMPT = {"mpqbench/__init__.py", "mpqbench/cli.py", "mpqbench/__main__.py"}
# figures only: a compute stage imports them to draw its notebook's plots, but its records do
# not depend on them, so only the report stage lists them (a plot change re-runs the report)
PLOTTING_ONLY = {"mpqbench/plots.py"}
REPORT_STAGE = "report"

# stage name -> entry file(s); ``{method}`` is a run's method (the ``run`` stage)
STAGE_ENTRIES: dict[str, list[str]] = {
    "params": ["mpqbench/params_schema.py"],
    "data": ["mpqbench/data/__init__.py"],
    "checkpoint": ["mpqbench/checkpoints.py"],
    "fp_baseline": ["notebooks/fp_baseline.py", "mpqbench/notebook.py"],
    "uniform": ["notebooks/uniform.py", "mpqbench/notebook.py"],
    "policy_bank": ["mpqbench/policy_bank.py", "mpqbench/context.py"],
    "run": ["notebooks/{method}.py", "mpqbench/notebook.py"],
    "report": ["notebooks/report.py", "mpqbench/notebook.py"],
}


def _module_file(root: Path, module: str) -> Path | None:
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every ``mpqbench`` module named by an import anywhere in ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "mpqbench"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mpqbench"))
    return found


def import_closure(entries: list[str], root: str | Path = ".",
                   skip: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Repository-relative paths of the files ``entries`` run: the entries and every
    ``mpqbench`` module they import, transitively (parent packages' ``__init__`` too).

    ``skip``: modules left out together with what only they import (``PLOTTING_ONLY`` for a
    compute stage)."""
    root = Path(root)
    seen: set[Path] = set()
    todo = [root / entry for entry in entries]
    while todo:
        path = todo.pop()
        if path in seen or path.relative_to(root).as_posix() in skip:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(root, ".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p.relative_to(root).as_posix() for p in seen} - EXEMPT


def stage_closure(stage: str, entries: list[str], root: str | Path = ".") -> set[str]:
    """What ``stage`` must depend on: its entries' closure, plotting modules only for the
    report stage."""
    return import_closure(entries, root, frozenset() if stage == REPORT_STAGE else PLOTTING_ONLY)


def covered(path: str, deps: list[str]) -> bool:
    """True when ``path`` is one of ``deps`` or inside a folder among them."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def main(argv: list[str] | None = None) -> int:

    params = load_yaml(Path("params.yaml").read_text())
    methods = sorted({run["method"] for run in (params.get("runs") or {}).values()})
    for stage, entries in STAGE_ENTRIES.items():
        expanded = ([e.format(method=m) for m in methods for e in entries]
                    if stage == "run" else entries)
        print(f"{stage}:")
        for path in sorted(stage_closure(stage, expanded)):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
