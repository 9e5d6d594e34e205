"""Are the committed results those of the committed code? (``make check-results``)

Reads ``dvc.lock`` and the checkout, with or without the data present, and reports:

- **stale** stages: a code, notebook or params dependency changed since the stage's records
  were made (what ``dvc status`` would say), and stages of ``dvc.yaml`` never locked.
  Reported, not failed: a refactor may land before its re-run.
- **inconsistent** results, which fail the check: a committed output (a file or folder of
  ``results/`` or ``checkpoints/`` that git tracks) whose hash is not the lock's, a
  committed output missing, a folder of RunRecords that no locked stage produced, or a
  RunRecord that ``results.validate`` refuses (accuracies outside 0..100, a drop that is not
  fp_top1 - top1, a cost that is not positive and finite, provenance without commit, CPU,
  seed or versions, bits outside the candidates): listed with the stale stages instead when
  its stage is stale, since the re-run that is due rewrites it. A record that was committed
  with ``dvc commit`` after a hand edit has the lock's hash, so the hash check alone would
  pass it; the validation does not.

Hashes are DVC 3's: the md5 of a file's bytes; for a folder, the md5 of the JSON list of
``{"md5", "relpath"}`` of its files sorted by path, suffixed ``.dir`` (``.dvcignore``'s
``__pycache__`` and ``*.pyc`` left out). Deps that git does not track and that are absent
here (the decoded dataset, before ``dvc repro data``) are listed apart, not as stale.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mpqbench.config import load_yaml
from mpqbench.errors import MpqbenchError
from mpqbench.results import validate

PINNED = "checkpoints/"  # outputs committed so that a clone never rebuilds them


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_dir(path: Path) -> str:
    entries = [{"md5": md5_file(p), "relpath": p.relative_to(path).as_posix()}
               for p in sorted(path.rglob("*"))
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    entries.sort(key=lambda e: e["relpath"])
    blob = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(blob).hexdigest() + ".dir"


def md5_path(path: Path) -> str:
    return md5_dir(path) if path.is_dir() else md5_file(path)


def _yaml_value(value):
    """DVC writes floats like 1e-05, which YAML 1.1 reads as strings: compare as numbers."""
    if isinstance(value, dict):
        return {k: _yaml_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_value(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<missing>"
        node = node[part]
    return node


@dataclass
class ResultsCheck:
    """What ``check`` found: stale stages (stage -> reasons), inconsistencies (failures), and
    stages whose untracked deps are absent here."""

    stale: dict[str, list[str]] = field(default_factory=dict)
    inconsistent: list[str] = field(default_factory=list)
    unchecked: dict[str, list[str]] = field(default_factory=dict)
    stages: int = 0

    @property
    def ok(self) -> bool:
        return not self.inconsistent

    def report(self) -> str:
        lines = [f"stale {name}: {', '.join(why)}" for name, why in self.stale.items()]
        lines += [f"INCONSISTENT: {what}" for what in self.inconsistent]
        lines += [f"not checked here (absent, not in git) {name}: {', '.join(paths)}"
                  for name, paths in self.unchecked.items()]
        lines.append(f"{len(self.stale)} of {self.stages} stages stale against the checkout; "
                     f"{len(self.inconsistent)} inconsistencies between results/ and dvc.lock")
        return "\n".join(lines)


def _tracked(root: Path) -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    return {p for p in out.stdout.decode().split("\0") if p}


def _is_tracked(path: str, tracked: set[str]) -> bool:
    return path in tracked or any(t.startswith(path.rstrip("/") + "/") for t in tracked)


def _declared_stages(root: Path) -> set[str]:
    """Stage names of dvc.yaml with foreach expanded over params.yaml."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = load_yaml((root / "params.yaml").read_text())
    names = set()
    for name, body in stages.items():
        if "matrix" in body:  # DVC names each combination name@v1-v2-... in the keys' order
            axes = [_lookup(params, v.strip("${} ")) if isinstance(v, str) else v
                    for v in body["matrix"].values()]
            names.update(f"{name}@" + "-".join(map(str, combo))
                         for combo in itertools.product(*axes))
            continue
        if "foreach" not in body:
            names.add(name)
            continue
        key = body["foreach"].strip("${} ")
        items = _lookup(params, key)
        keys = items.keys() if isinstance(items, dict) else items
        names.update(f"{name}@{k}" for k in keys)
    return names


def check(root: str | Path = ".") -> ResultsCheck:
    """Compare ``dvc.lock`` with the checkout at ``root`` (see the module doc)."""
    root = Path(root)
    lock = yaml.safe_load((root / "dvc.lock").read_text()).get("stages", {})
    params = load_yaml((root / "params.yaml").read_text())
    tracked = _tracked(root)
    result = ResultsCheck(stages=len(lock))
    locked_outs: dict[str, str] = {}  # out path -> the stage that wrote it
    declared = _declared_stages(root)
    for name in sorted(set(lock) - declared):
        result.inconsistent.append(f"{name} is in dvc.lock but no longer in dvc.yaml: delete "
                                   "its entry from dvc.lock (DVC leaves it there)")
    for name, stage in lock.items():
        if name not in declared:
            continue
        for dep in stage.get("deps", []):
            path = root / dep["path"]
            if not path.exists():
                if _is_tracked(dep["path"], tracked):
                    result.stale.setdefault(name, []).append(f"{dep['path']} deleted")
                else:
                    result.unchecked.setdefault(name, []).append(dep["path"])
            elif md5_path(path) != dep.get("md5"):
                result.stale.setdefault(name, []).append(dep["path"])
        for key, value in (stage.get("params") or {}).get("params.yaml", {}).items():
            if _yaml_value(_lookup(params, key)) != _yaml_value(value):
                result.stale.setdefault(name, []).append(f"param {key}")
        for out in stage.get("outs", []):
            locked_outs[out["path"]] = name
            if not _is_tracked(out["path"], tracked):
                continue  # a DVC-cached output (the decoded data): not committed
            path = root / out["path"]
            if not path.exists():
                result.inconsistent.append(f"{out['path']} ({name}) is in dvc.lock but missing")
            elif md5_path(path) != out.get("md5"):
                result.inconsistent.append(
                    f"{out['path']} ({name}) does not have the hash dvc.lock records: it was "
                    f"changed by hand or by a run whose dvc.lock was not committed; "
                    + (f"restore the pinned copy with `git checkout -- {out['path']}` (a "
                       f"rebuild would re-run every stage below it)"
                       if out["path"].startswith(PINNED) else
                       f"restore it with `git checkout -- {out['path']}`, or re-run "
                       f"`dvc repro -s {name}` and commit its outputs with dvc.lock"))
    for name in sorted(declared - set(lock)):
        result.stale.setdefault(name, []).append("never run (not in dvc.lock)")
    for runs in (root / "results" / "runs", root / "results" / "grid" / "runs"):
        if not runs.is_dir():
            continue
        for folder in sorted(p for p in runs.iterdir() if p.is_dir()):
            rel = folder.relative_to(root).as_posix()
            if rel not in locked_outs:
                result.inconsistent.append(f"{rel}: RunRecords no locked stage produced; "
                                           "delete the folder or run its stage")
            stage = locked_outs[rel] if rel in locked_outs else None
            for record in sorted(folder.glob("*.json")):
                problem = record_problem(record)
                if problem is None:
                    continue
                if stage in result.stale:  # its re-run is due anyway: listed, not failed
                    if "records that do not validate" not in result.stale[stage]:
                        result.stale[stage].append("records that do not validate")
                else:
                    result.inconsistent.append(f"{record.relative_to(root)}: {problem}; "
                                               "re-run its stage")
    return result


def record_problem(path: Path) -> str | None:
    """Why a committed RunRecord file cannot stand, or None: not JSON, a field ``validate``
    refuses (ranges, drop, costs, provenance, bits), or no git commit in its provenance."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(data, dict) or "run_id" not in data:
        return "not a RunRecord (no run_id)"
    try:
        run = validate(data, path.name)
    except MpqbenchError as exc:
        return str(exc).removeprefix(f"{path.name}: ").removesuffix(
            "; re-run the stage that wrote it")
    except (KeyError, TypeError, AttributeError) as exc:  # a field of the wrong shape
        return f"a field of the wrong shape ({type(exc).__name__}: {exc})"
    commit = run.provenance.get("git_commit")
    if not (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit)):
        return f"provenance.git_commit = {commit!r} names no commit"
    return None


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(".")
    missing = [name for name in ("dvc.lock", "dvc.yaml", "params.yaml")
               if not (root / name).is_file()]
    if missing:
        print(f"mpqbench: error: check-results: {root.resolve()} has no "
              f"{', '.join(missing)}; run it from the repository root (or pass that folder)",
              file=sys.stderr)
        return 2
    result = check(root)
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
