"""Which package modules each pipeline stage runs: the import closure of its entry.

A stage's code dependencies in ``dvc.yaml`` must cover the modules its entry point imports,
directly or through other modules (imports inside functions included), so that a change to
any of them re-runs the stage, and they should hold nothing else, so that a change elsewhere
does not. ``tests/test_stage_deps.py`` checks every stage of ``dvc.yaml`` against this, and
``python -m mpqbench.stage_deps`` prints the closure of each stage's entry;
``python -m mpqbench.stage_deps --new-method NAME [--add]`` prints (or adds to dvc.yaml) the
whole stage of a new method notebook, its exact dependencies included.

Not counted: ``mpqbench/__init__.py`` (a version string), ``mpqbench/cli.py`` and
``mpqbench/__main__.py`` (argument parsing; each command imports the module that does its
work, and that module's closure is what is checked).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from mpqbench.config import load_yaml

EXEMPT = {"mpqbench/__init__.py", "mpqbench/cli.py", "mpqbench/__main__.py"}
# figures only: a compute stage imports them to draw its notebook's plots, but its records do
# not depend on them, so only the report stage lists them (a plot change re-runs the report)
PLOTTING_ONLY = {"mpqbench/plots.py"}
REPORT_STAGE = "report"

# stage name -> entry file(s) of the stages that are not a method notebook
STAGE_ENTRIES: dict[str, list[str]] = {
    "params": ["mpqbench/params_schema.py", "mpqbench/preflight.py"],
    "data": ["mpqbench/data/__init__.py"],
    "checkpoint": ["mpqbench/checkpoints.py"],
    "policy_bank": ["mpqbench/policy_bank.py", "mpqbench/context.py"],
    "allocate": ["mpqbench/grid.py"],   # the comparison grid: python -m mpqbench.grid
    "evaluate": ["mpqbench/grid.py"],
}
RUNNER = "mpqbench/notebook.py"  # every notebook stage runs through it


def stage_entries(stage: str, root: str | Path = ".") -> list[str]:
    """A stage's entry files: ``STAGE_ENTRIES``, else its notebook ``notebooks/<stage>.py``
    (every method stage, the fp_baseline, uniform and report stages) and the runner."""
    if stage in STAGE_ENTRIES:
        return STAGE_ENTRIES[stage]
    notebook = f"notebooks/{stage}.py"
    if not Path(root, notebook).is_file():
        raise ValueError(f"stage {stage!r}: no entry in STAGE_ENTRIES and no {notebook}")
    return [notebook, RUNNER]


def code_deps(stage: str, root: str | Path = ".") -> list[str]:
    """What ``stage`` lists in dvc.yaml: its closure's package files, a package folder where
    every module of it is needed."""
    needed = {p for p in stage_closure(stage, stage_entries(stage, root), root)
              if p.startswith("mpqbench/")}
    out = set(needed)
    for folder in sorted({str(Path(p).parent) for p in needed if p.count("/") >= 2}):
        files = {f.relative_to(root).as_posix() for f in Path(root, folder).glob("*.py")}
        if files and files <= out:
            out = (out - files) | {folder}
    return sorted(out)


METHOD_STAGE = """\
  {method}:   # {doc}
    foreach: ${{models}}
    do:
      cmd: >-
        python -m mpqbench notebook notebooks/{method}.py
        --out results/notebooks/{method}-${{item}}
        --runs results/runs/{method}-${{item}}
        -p model_name ${{item}} -p profile ${{profile}}
      deps:   # the import closure of the entry: tests/test_stage_deps.py
        - results/params-check.txt   # the params stage: params.yaml checked first
        - notebooks/{method}.py
        - data/${{dataset}}
        - checkpoints/${{item}}.pt
        - user_models   # params.yaml user_models: their factories and weights
{reads}{code}
      params:
        - profile
        - dataset
        - seed
        - data
        - fix_first_last
        - profiles.${{profile}}
        - method_cfg.{method}
      outs:
        - results/notebooks/{method}-${{item}}:
            cache: false
            persist: true   # kept until a run succeeds (mpqbench/stage_guard.py)
        - results/runs/{method}-${{item}}:
            cache: false
            persist: true   # kept until a run succeeds (mpqbench/stage_guard.py)
"""


def method_stage(method: str, reads: list[str] = (), doc: str = "a method notebook",
                 root: str | Path = ".") -> str:
    """The dvc.yaml block of a method's stage: its notebook run for every model, its exact
    code dependencies, ``reads`` (upstream outputs it reads, ``${item}`` for the model)."""
    reads_lines = "".join(f"        - {path}\n" for path in reads)
    code = "\n".join(f"        - {path}" for path in code_deps(method, root))
    return METHOD_STAGE.format(method=method, doc=doc, reads=reads_lines, code=code)


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


def add_stage(dvc_yaml: str | Path, block: str) -> None:
    """Insert a stage ``block`` at the end of the ``stages:`` section of ``dvc_yaml`` (before
    the next top-level key or comment); refuses a stage name already there."""
    path = Path(dvc_yaml)
    lines = path.read_text().split("\n")
    name = block.split(":", 1)[0].strip()
    if name in load_yaml(path.read_text())["stages"]:
        raise ValueError(f"{path} already has a stage {name!r}")
    start = lines.index("stages:")
    end = next((i for i in range(start + 1, len(lines))
                if lines[i] and not lines[i].startswith((" ", "\t"))), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = ["", *block.rstrip("\n").split("\n")]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``python -m mpqbench.stage_deps``: every stage's code dependencies;
    ``--new-method NAME [--reads PATH ...]``: the dvc.yaml block of a new method's stage."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--new-method", metavar="NAME",
                        help="print the stage of notebooks/NAME.py, to add to dvc.yaml")
    parser.add_argument("--reads", nargs="*", default=[], metavar="PATH",
                        help="upstream outputs the method reads, e.g. "
                             "results/policy_bank/${item}.json")
    parser.add_argument("--add", action="store_true",
                        help="with --new-method: add the stage to dvc.yaml instead of printing")
    args = parser.parse_args(argv)
    if args.new_method:
        block = method_stage(args.new_method, args.reads)
        if args.add:
            add_stage("dvc.yaml", block)
            print(f"dvc.yaml: stage {args.new_method} added (`dvc repro {args.new_method}`)")
        else:
            print(block, end="")
        return 0
    stages = load_yaml(Path("dvc.yaml").read_text())["stages"]
    for stage in stages:
        print(f"{stage}:")
        for path in code_deps(stage):
            print(f"  - {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
