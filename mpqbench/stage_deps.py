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

EXEMPT = {"mpqbench/__init__.py", "mpqbench/cli.py", "mpqbench/__main__.py"}

# stage name -> entry file(s); ``{method}`` is a run's method (the ``run`` stage)
STAGE_ENTRIES: dict[str, list[str]] = {
    "data": ["mpqbench/data.py"],
    "checkpoint": ["mpqbench/checkpoints.py"],
    "fp_baseline": ["notebooks/fp_baseline.py", "mpqbench/notebook.py"],
    "uniform": ["notebooks/uniform.py", "mpqbench/notebook.py"],
    "policy_bank": ["mpqbench/policy_bank.py", "mpqbench/baseline.py"],
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


def import_closure(entries: list[str], root: str | Path = ".") -> set[str]:
    """Repository-relative paths of the files ``entries`` run: the entries and every
    ``mpqbench`` module they import, transitively (parent packages' ``__init__`` too)."""
    root = Path(root)
    seen: set[Path] = set()
    todo = [root / entry for entry in entries]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = _module_file(root, ".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p.relative_to(root).as_posix() for p in seen} - EXEMPT


def covered(path: str, deps: list[str]) -> bool:
    """True when ``path`` is one of ``deps`` or inside a folder among them."""
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def main(argv: list[str] | None = None) -> int:
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    methods = sorted({run["method"] for run in (params.get("runs") or {}).values()})
    for stage, entries in STAGE_ENTRIES.items():
        expanded = ([e.format(method=m) for m in methods for e in entries]
                    if stage == "run" else entries)
        print(f"{stage}:")
        for path in sorted(import_closure(expanded)):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
