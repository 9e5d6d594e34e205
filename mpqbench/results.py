"""RunRecord: one JSON file per run under ``results/runs/``; the report reads only these."""

from __future__ import annotations

import base64
import json
import math
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mpqbench.errors import MpqbenchError
from mpqbench.quant.policy import check_bits

SCHEMA_VERSION = 1
PIPELINE_OUTPUTS = ("results", "dvc.lock")
TRACKED_PACKAGES = (
    "mpqbench", "torch", "torchvision", "numpy", "pandas", "pulp", "papermill", "dvc",
)


@dataclass
class RunRecord:
    """Everything one run measured, and enough provenance to reproduce it.

    ``cost`` holds size_mib, bitops_g, compression_ratio, mean_w_bits, mean_a_bits;
    ``accuracy`` holds fp_top1, top1, top5, loss and drop (fp_top1 - top1, points);
    ``timing`` holds sensitivity_s, search_s, protocol_s, total_s (wall seconds).
    """

    run_id: str
    method: str
    model: str
    dataset: str
    dataset_variant: str
    protocol: str
    metric: str | None = None
    solver: str | None = None
    budget: dict[str, Any] | None = None
    bit_candidates: list[int] | None = None
    policy: dict[str, Any] | None = None
    cost: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REQUIRED_ACCURACY = ("fp_top1", "top1", "top5", "drop")
REQUIRED_COST = ("size_mib", "bitops_g", "compression_ratio", "mean_w_bits", "mean_a_bits")
REQUIRED_PROVENANCE = ("git_commit", "cpu", "seed", "versions")
PERCENT_FIELDS = ("fp_top1", "top1", "top5")
DROP_TOLERANCE = 0.01  # points: drop is fp_top1 - top1, both as stored


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    """The commit checked out in ``cwd`` and whether tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # outputs the pipeline itself rewrites do not make the code differ from the commit
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                *(f":(exclude){path}" for path in PIPELINE_OUTPUTS))
    return {"git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}x{torch.get_num_threads()}threads"


def cpu_description() -> str:
    """The CPU model and the vector ISA torch's kernels use, e.g. ``AMD EPYC (AVX2)``.

    Float results of the same seeded CPU run can differ between CPU models (the kernels sum in
    another order), so records name the CPU.
    """
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def provenance(seed: int, profile: str, device: torch.device | str) -> dict[str, Any]:
    """Seed, profile, device, CPU, package versions, git commit and a UTC timestamp."""
    return {
        "seed": seed,
        "profile": profile,
        "device": device_description(device),
        "cpu": cpu_description(),
        "versions": package_versions(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_state(),
    }


def validate(record: dict[str, Any], source: str = "record") -> RunRecord:
    """Check a record's fields and return it as a RunRecord; errors name the file and the field."""
    if record.get("schema_version") != SCHEMA_VERSION:
        raise MpqbenchError(
            f"{source}: schema_version {record.get('schema_version')!r}, this mpqbench reads "
            f"{SCHEMA_VERSION}; re-run the stage that wrote it"
        )
    known = {f.name for f in fields(RunRecord)}
    unknown = set(record) - known
    if unknown:
        raise MpqbenchError(f"{source}: unknown fields {sorted(unknown)}")
    try:
        run = RunRecord(**record)
    except TypeError as exc:
        raise MpqbenchError(f"{source}: {exc}") from exc
    for group, keys in (("accuracy", REQUIRED_ACCURACY), ("cost", REQUIRED_COST),
                        ("provenance", REQUIRED_PROVENANCE)):
        missing = [k for k in keys if k not in getattr(run, group)]
        if missing:
            raise MpqbenchError(f"{source}: {group} lacks {missing}")
    problem = implausible(run)
    if problem:
        raise MpqbenchError(f"{source}: {problem}; re-run the stage that wrote it")
    return run


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def implausible(run: RunRecord) -> str | None:
    """The first field of ``run`` that no real run can hold, named with its value, or None.

    Accuracies are percentages of the test images, ``drop`` is ``fp_top1 - top1``, costs are
    positive and finite, the provenance names a CPU, package versions and an integer seed, and
    every searchable layer's bits lie within the record's candidates (the fixed first and last
    layers excepted; activation widths only where the policy searched them, i.e. varies them).
    """
    acc, cost, prov = run.accuracy, run.cost, run.provenance
    for key in PERCENT_FIELDS:
        if not _number(acc[key]) or not 0 <= acc[key] <= 100:
            return f"accuracy.{key} = {acc[key]!r} is not a percentage in 0..100"
    if acc["top5"] < acc["top1"]:
        return f"accuracy.top5 = {acc['top5']!r} is below top1 = {acc['top1']!r}"
    if not _number(acc["drop"]) or abs(acc["drop"] - (acc["fp_top1"] - acc["top1"])) > \
            DROP_TOLERANCE:
        return (f"accuracy.drop = {acc['drop']!r} is not fp_top1 - top1 = "
                f"{acc['fp_top1'] - acc['top1']:.4f}")
    for key in REQUIRED_COST:
        if not _number(cost[key]) or cost[key] <= 0:
            return f"cost.{key} = {cost[key]!r} is not a positive finite number"
    if not prov.get("cpu") or not prov.get("versions"):
        return "provenance names no cpu or no package versions"
    if not isinstance(prov["seed"], int) or isinstance(prov["seed"], bool):
        return f"provenance.seed = {prov['seed']!r} is not an integer"
    return _bits_outside_candidates(run)


def _bits_outside_candidates(run: RunRecord) -> str | None:
    """``quant.policy.check_bits`` on the record's policy: its message, or None."""
    policy = run.policy or {}
    if not policy.get("layers"):
        return None
    try:
        check_bits(policy["layers"], "policy", policy.get("bit_candidates") or run.bit_candidates,
                   policy.get("fixed"))
    except MpqbenchError as exc:
        return str(exc)
    return None


def save_run(run: RunRecord, runs_dir: str | Path) -> Path:
    """Validate and write ``<runs_dir>/<run_id>.json`` (written whole, then renamed)."""
    validate(run.to_dict(), run.run_id)
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{run.run_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_runs(runs_dir: str | Path) -> list[RunRecord]:
    """Every RunRecord under ``runs_dir`` (recursively), sorted by path."""
    runs = []
    for path in sorted(Path(runs_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise MpqbenchError(f"{path} is not valid JSON ({exc}); re-run its stage") from exc
        runs.append(validate(record, str(path)))
    return runs


def find_run(runs_dir: str | Path, run_id: str) -> RunRecord | None:
    """The RunRecord named ``run_id`` under ``runs_dir``; None when the folder or run is absent
    (its stage has not run yet)."""
    if not Path(runs_dir).is_dir():
        return None
    return next((run for run in load_runs(runs_dir) if run.run_id == run_id), None)


def encode_correct(correct: np.ndarray) -> dict[str, Any]:
    """Per-image top-1 hits (bool, test order) as a RunRecord keeps them: the bits packed
    (``numpy.packbits``, big-endian within a byte) and base64-encoded, with their count."""
    packed = np.packbits(np.asarray(correct, dtype=bool))
    return {"images": int(len(correct)), "packbits_base64": base64.b64encode(packed).decode()}


def decode_correct(stored: dict[str, Any]) -> np.ndarray:
    """The bool array ``encode_correct`` stored."""
    packed = np.frombuffer(base64.b64decode(stored["packbits_base64"]), dtype=np.uint8)
    return np.unpackbits(packed)[: stored["images"]].astype(bool)


def policy_bits(runs: list[RunRecord], layer_order: list[str], key: str = "w_bits"
                ) -> pd.DataFrame:
    """Layers x runs: each run's ``w_bits`` (or ``a_bits``) per layer, columns by run_id."""
    return pd.DataFrame({run.run_id: {name: bits[key] for name, bits in run.policy["layers"]
                                      .items()} for run in runs if run.policy}).loc[layer_order]
