"""Switch params.yaml to another suite (``configs/<suite>.yaml``), keeping its comments.

An overlay is a YAML mapping laid over params.yaml: mappings merge key by key, any other value
replaces the old one, and the keys listed under the overlay's ``replace:`` are replaced whole
(a mapping that must not mix with the old one). ``--set key.sub=value`` pairs are applied
after it. The result is checked (dataset, models, the ImageNet folder, then every key) before
params.yaml is written; `git checkout params.yaml` goes back. Every method stage of dvc.yaml
runs for every model of ``models``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mpqbench.config import load_yaml
from mpqbench.data import DATASETS, folder_root
from mpqbench.errors import MpqbenchError
from mpqbench.models.zoo import check_model_dataset
from mpqbench.params_schema import check_params

REPLACE_KEY = "replace"


def _round_trip() -> YAML:
    rt = YAML()  # round-trip: comments, key order and flow style survive
    rt.width = 120
    rt.preserve_quotes = True
    return rt


def _merge(target: dict, overlay: dict, replace: set[str], prefix: str = "") -> list[str]:
    """Lay ``overlay`` over ``target`` in place; returns the dotted keys that changed."""
    changed = []
    for key, value in overlay.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(target.get(key), dict) and path not in replace:
            changed += _merge(target[key], value, replace, path + ".")
        elif target.get(key) != value:
            target[key] = value
            changed.append(path)
    return changed


def parse_set(pair: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value read as YAML)."""
    key, sep, raw = pair.partition("=")
    if not sep or not key or "" in key.split("."):
        raise MpqbenchError(
            f"--set {pair!r}: expected KEY=VALUE, e.g. imagenet_root=/data/imagenet")
    try:
        return key.split("."), load_yaml(raw)
    except yaml.YAMLError as exc:
        raise MpqbenchError(f"--set {pair!r}: the value is not YAML ({exc})") from exc


def _nest(keys: list[str], value: Any) -> dict:
    for key in reversed(keys):
        value = {key: value}
    return value


def check_suite(params: dict[str, Any], repo: str | Path = ".") -> None:
    """Refuse a params dict whose dataset, models or image folder cannot run.

    ``repo``: the folder holding params.yaml and ``notebooks/``.
    """
    dataset = params.get("dataset")
    spec = DATASETS.get(dataset)
    models = params.get("models") or []
    if not isinstance(models, list):
        raise MpqbenchError(f"models = {models!r} must be a list of model names, e.g. "
                            "[resnet18, resnet50]")
    for model in models:
        check_model_dataset(model, dataset)
    if params.get("profile") not in params.get("profiles", {}):
        raise MpqbenchError(f"profile {params.get('profile')!r} is not defined under profiles")
    if spec.image_folder:
        folder_root(spec, params.get("imagenet_root"))
    check_params(params, repo)  # every other key, type and name


def apply_overlay(
    params_path: str | Path, overlay_path: str | Path, sets: list[str] | None = None
) -> list[str]:
    """Write params.yaml with the overlay and ``sets`` applied; returns the changed keys."""
    params_path, overlay_path = Path(params_path), Path(overlay_path)
    for path in (params_path, overlay_path):
        if not path.is_file():
            raise MpqbenchError(f"{path} not found (run from the repository root)")
    rt = _round_trip()
    overlay = _load(rt, overlay_path) or {}  # round-trip, so its flow style carries over
    if not isinstance(overlay, dict):
        raise MpqbenchError(f"{overlay_path} must hold a mapping of params.yaml keys")
    replace = overlay.pop(REPLACE_KEY, None) or []
    if not isinstance(replace, list):
        raise MpqbenchError(f"{overlay_path}: `{REPLACE_KEY}:` must list keys, e.g. [models]")
    replace = set(replace)
    params = _load(rt, params_path)
    changed = _merge(params, overlay, replace)
    for pair in sets or []:
        keys, value = parse_set(pair)
        changed += _merge(params, _nest(keys, value), {".".join(keys)})
    plain = load_yaml(_dump(rt, params))
    check_suite(plain, params_path.parent)
    params_path.write_text(_dump(rt, params))
    return changed


def _load(rt: YAML, path: Path) -> Any:
    try:
        return rt.load(path)
    except YAMLError as exc:
        raise MpqbenchError(f"{path} is not valid YAML: {exc}") from exc


def _dump(rt: YAML, data: Any) -> str:
    buffer = io.StringIO()
    rt.dump(data, buffer)
    return buffer.getvalue()
