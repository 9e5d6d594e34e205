"""The real pipeline definition and package in a fresh git + DVC repository (no data, no
results): what the tests of `dvc repro`'s guards start from."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DVC = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")


def pipeline_copy(root: Path) -> None:
    """dvc.yaml, params.yaml, the ignore files, mpqbench/, notebooks/ and user_models/ copied
    to ``root``, then `git init` and `dvc init` there."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("mpqbench", "notebooks", "user_models"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
