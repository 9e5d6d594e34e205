"""One check of the whole params.yaml before any compute: keys, types and names.

``check_params`` walks params.yaml against ``SCHEMA``. An unknown or misspelled key, a value of
the wrong type, a missing required key or an unknown name (profile, model, method, metric,
solver, rounding) stops with the key's full path, the value found and what is allowed. The
typed configs (``PtqConfig``, ``QatConfig``, ``SynthConfig``, ``FinetuneConfig``, ``Budget``)
are schemas themselves: their fields are the allowed keys, their annotations the types, so a
new field is accepted without editing this module. The ``params`` stage runs the check first
in ``dvc repro``, and every entry point runs it before reading data.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpqbench.cost import Budget, parse_wa
from mpqbench.data import DATASETS
from mpqbench.errors import MpqbenchError
from mpqbench.finetune import FinetuneConfig
from mpqbench.models.zoo import MODELS, register_user_models
from mpqbench.ptq import ROUNDINGS, PtqConfig
from mpqbench.qat import QAT_PROTOCOLS
from mpqbench.search import SOLVERS
from mpqbench.sensitivity import METRICS
from mpqbench.synth import GENERATORS, SynthConfig
from mpqbench.train import QatConfig

Spec = Any  # a type, a dataclass, or one of the spec classes below


@dataclass(frozen=True)
class Keys:
    """A mapping with these keys only; ``required`` must be present."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Each:
    """A mapping with free keys (names chosen by the user), each value matching ``value``."""

    value: Spec
    keys: Spec = str


@dataclass(frozen=True)
class ListOf:
    item: Spec


@dataclass(frozen=True)
class Maybe:
    """``inner`` or null."""

    inner: Spec


@dataclass(frozen=True)
class Name:
    """A string from a fixed set, or from a registry's names."""

    allowed: Callable[[], list[str]]
    what: str


@dataclass(frozen=True)
class Checked:
    """Any value that ``check`` accepts (it raises MpqbenchError otherwise)."""

    check: Callable[[Any], Any]
    what: str


def _protocol_names() -> list[str]:
    """The names of ``protocols.PROTOCOLS`` (that module imports this one)."""
    return [f"ptq-{r}" for r in ROUNDINGS.names()] + QAT_PROTOCOLS.names()


def _names(*names: str) -> Callable[[], list[str]]:
    return lambda: list(names)


def _metric_options(metric: str) -> Keys:
    """The keyword options of a registered metric's function (its signature is the schema)."""
    parameters = list(inspect.signature(METRICS.get(metric)).parameters.values())[1:]
    return Keys({p.name: Checked(lambda v: v, "a value") for p in parameters})


def _check_metric_options(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise MpqbenchError(f"params.yaml: {path} must map metric names to their options, "
                            f"got {value!r}")
    for metric, options in value.items():
        _check(metric, Name(METRICS.names, "metric"), f"{path}.{metric}")
        _check(options if options is not None else {}, _metric_options(metric),
               f"{path}.{metric}")


def _type_name(spec: Spec) -> str:
    if isinstance(spec, type):
        return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or "
                "false", "dict": "a mapping", "list": "a list"}.get(spec.__name__, spec.__name__)
    return str(spec)


def _dataclass_keys(cls: type) -> Keys:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _annotation_spec(hints[f.name]) for f in dataclasses.fields(cls)}
    required = tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    return Keys(fields, required)


def _annotation_spec(annotation: Any) -> Spec:
    """``int | None`` -> Maybe(int); ``tuple[float, float]`` -> a list of numbers; else itself."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, Any)
    args = typing.get_args(annotation)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)][:1] or [Any]
        return Maybe(_annotation_spec(inner))
    if typing.get_origin(annotation) in (tuple, list):
        return ListOf(_annotation_spec(args[0]) if args else Any)
    return annotation


METRIC_OPTIONS = Checked(_check_metric_options, "metric -> options")
BIT_PAIR = Checked(parse_wa, "a bit pair such as W4A4 or [4, 4]")
BUDGET = Budget  # its fields; Budget.from_dict checks the values after the keys
BITS = ListOf(int)

QAT_KEYS = {k: v for k, v in _dataclass_keys(QatConfig).fields.items() if k != "seed"}
TABLE = Keys({"metric": Name(METRICS.names, "metric"), "data": str, "options": Maybe(dict)},
             required=("metric", "data"))

METHOD_CFG = Keys({
    "uniform": Keys({"configs": ListOf(BIT_PAIR),
                     "roundings": ListOf(Name(ROUNDINGS.names, "rounding"))}),
    "first_order_ptq": Keys({
        "bits": BITS, "a_bits": int, "budgets": ListOf(BUDGET),
        "rounding": Name(ROUNDINGS.names, "rounding"),
        "metrics": METRIC_OPTIONS, "solver": Name(SOLVERS.names, "solver"),
        "hawq_v3": Keys({"metric": Name(METRICS.names, "metric"), "bits": BITS,
                         "ratios": ListOf(float),
                         "kinds": ListOf(Name(_names("size", "bitops"), "budget kind"))}),
    }),
    "data_free": Keys({
        "bits": BITS, "a_bits": int, "budgets": ListOf(BUDGET),
        "rounding": Name(ROUNDINGS.names, "rounding"),
        "real_images": int, "synth": Each(SynthConfig, Name(GENERATORS.names, "generator")),
        "calibrate_on": str, "tables": Each(TABLE), "allocate": ListOf(str),
    }),
    "limpq": Keys({
        "candidates": BITS, "alpha": float, "indicator_training": Keys(QAT_KEYS),
        "budgets": ListOf(BUDGET), "uniform": ListOf(BIT_PAIR),
        "finetune": Each(Keys(QAT_KEYS)),  # per profile: overrides of profiles.<p>.qat
    }),
    "saq": Keys({
        "configs": ListOf(BIT_PAIR), "rho": float,
        "perturb_space": Name(_names("weight_standardized", "raw"), "perturbation space"),
        "cases_at": BIT_PAIR, "rho_sweep": ListOf(float), "cases_rho": float,
        "cases": ListOf(int), "every": ListOf(int), "rho_mixed": float,
        "mixed_policy": Keys({"method": str, "budget": BUDGET,
                              "protocol": Name(_protocol_names, "protocol")},
                             required=("method", "budget", "protocol")),
    }),
})

POLICY_BANK = Keys({"count": int, "budget": BUDGET, "bits": BITS, "a_bits": int,
                    "rounding": Name(ROUNDINGS.names, "rounding"),
                    "val_images": Maybe(int)}, required=("count", "budget", "bits", "a_bits"))

USER_MODEL = Keys({"datasets": ListOf(Name(DATASETS.names, "dataset")), "sha256": str,
                   "published_top1": Maybe(float)}, required=("datasets", "sha256"))

PROFILE = Keys({
    "device": str,
    "finetune": Keys({**{k: v for k, v in _dataclass_keys(FinetuneConfig).fields.items()
                         if k != "seed"}, "epochs": Each(int)}, required=("epochs",)),
    "eval": Keys({"batch_size": int, "max_images": Maybe(int)}, required=("batch_size",)),
    "ptq": PtqConfig,
    "sensitivity": METRIC_OPTIONS,
    "synth": Keys({"images": int, "batch_size": int, "iters": int}),
    "qat": Keys(QAT_KEYS, required=("epochs",)),
    "limpq_indicators": Keys(QAT_KEYS, required=("epochs",)),
    "policy_bank": POLICY_BANK,
}, required=("device", "finetune", "eval"))

# The comparison grid (issue 16): shared budgets by name, and per protocol the budgets it
# evaluates and its seeds by profile; ``cut`` names, by profile, the allocators (or
# ``allocator@budget`` cells) left out of a protocol there, and ``only`` keeps a budget to the
# allocators it lists (the report marks both kinds of cells). Allocator names are checked by
# ``mpqbench.grid`` before any compute (its registry); the cross-references here.
GRID_CELL = Keys({"budgets": ListOf(str), "seeds": Each(int), "cut": Maybe(Each(ListOf(str))),
                  "only": Maybe(Each(ListOf(str)))},
                 required=("budgets", "seeds"))
GRID = Keys({"allocators": ListOf(str),
             "cells": Each(GRID_CELL, Name(_protocol_names, "protocol")),
             "qat": Each(Keys(QAT_KEYS)),  # per profile: overrides of profiles.<p>.qat
             "protocol_options": Each(dict, Name(_protocol_names, "protocol"))},
            required=("allocators", "cells"))

SCHEMA = Keys({
    "profile": str, "dataset": Name(DATASETS.names, "dataset"),
    "models": ListOf(Name(MODELS.names, "model")), "seed": int,
    "data": Keys({"val_size": int}, required=("val_size",)), "imagenet_root": Maybe(str),
    "fix_first_last": bool, "method_cfg": METHOD_CFG, "user_models": Maybe(Each(USER_MODEL)),
    "profiles": Each(PROFILE), "budgets": Each(BUDGET), "grid": GRID,
}, required=("profile", "dataset", "models", "seed", "data", "profiles"))


def _check(value: Any, spec: Spec, path: str) -> None:
    where = f"params.yaml: {path}" if path else "params.yaml"
    if spec is Any:
        return
    if isinstance(spec, str) or (isinstance(spec, type) and typing.get_origin(spec)):
        return
    if spec is Budget:  # its keys here, its values by Budget itself (bit pairs, numbers)
        _check(value, Keys({name: Any for name in Budget.__dataclass_fields__}), path)
        try:
            Budget.from_dict(value)
        except MpqbenchError as exc:
            raise MpqbenchError(f"{where}: {exc}") from None
        return
    if isinstance(spec, type) and dataclasses.is_dataclass(spec):
        _check(value, _dataclass_keys(spec), path)
        return
    if isinstance(spec, Maybe):
        if value is not None:
            _check(value, spec.inner, path)
        return
    if isinstance(spec, Keys):
        if not isinstance(value, dict):
            raise MpqbenchError(f"{where} must be a mapping with keys {sorted(spec.fields)}, "
                                f"got {value!r}")
        for key in value:
            if key not in spec.fields:
                raise MpqbenchError(
                    f"{where}: unknown key {key!r} (value {value[key]!r}); allowed keys: "
                    f"{', '.join(sorted(spec.fields))}")
        missing = [key for key in spec.required if key not in value]
        if missing:
            raise MpqbenchError(f"{where}: missing key {missing[0]!r} (required: "
                                f"{', '.join(spec.required)})")
        for key, item in value.items():
            _check(item, spec.fields[key], f"{path}.{key}" if path else key)
        return
    if isinstance(spec, Each):
        if not isinstance(value, dict):
            raise MpqbenchError(f"{where} must be a mapping, got {value!r}")
        for key, item in value.items():
            _check(key, spec.keys, f"{path}.{key}")
            _check(item, spec.value, f"{path}.{key}")
        return
    if isinstance(spec, ListOf):
        if not isinstance(value, (list, tuple)):
            raise MpqbenchError(f"{where} must be a list, got {value!r}")
        for i, item in enumerate(value):
            _check(item, spec.item, f"{path}[{i}]")
        return
    if isinstance(spec, Name):
        allowed = spec.allowed()
        if value not in allowed:
            raise MpqbenchError(f"{where}: unknown {spec.what} {value!r}; allowed: "
                                f"{', '.join(sorted(map(str, allowed)))}")
        return
    if isinstance(spec, Checked):
        if spec.check is _check_metric_options:
            _check_metric_options(value, path)
            return
        try:
            spec.check(value)
        except MpqbenchError as exc:
            raise MpqbenchError(f"{where}: {exc}") from None
        return
    if spec is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MpqbenchError(f"{where} = {value!r} must be {_type_name(float)}")
        return
    if spec is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MpqbenchError(f"{where} = {value!r} must be {_type_name(int)}")
        return
    if isinstance(spec, type) and not isinstance(value, spec):
        raise MpqbenchError(f"{where} = {value!r} must be {_type_name(spec)}")


def check_params(params: dict[str, Any], repo: str | Path = ".") -> None:
    """Refuse params.yaml with any key, type or name it cannot run; see the module docstring.
    Registers ``user_models`` first (``models.zoo.register_user_models``), so that the model
    names are checked against the shipped models and the user's."""
    if not isinstance(params, dict):
        raise MpqbenchError("params.yaml must hold a mapping of settings")
    if "runs" in params:
        raise MpqbenchError("params.yaml: runs: is gone; each method has its own stage in "
                            "dvc.yaml, run for every model of `models` (add one with `python -m "
                            "mpqbench.stage_deps --new-method NAME --add`); remove runs:")
    method_cfg = params.get("method_cfg")
    if isinstance(method_cfg, dict):  # a method added as a notebook brings its own settings
        added = {key for key in method_cfg if key not in METHOD_CFG.fields
                 and Path(repo, "notebooks", f"{key}.py").is_file()}
        for key in sorted(added):
            _check(method_cfg[key], dict, f"method_cfg.{key}")
        params = {**params, "method_cfg": {k: v for k, v in method_cfg.items()
                                           if k not in added}}
    _check(params.get("user_models"), Maybe(Each(USER_MODEL)), "user_models")
    register_user_models(params.get("user_models"), repo)  # before the model names are checked
    _check(params, SCHEMA, "")
    profiles = params["profiles"]
    if params["profile"] not in profiles:
        raise MpqbenchError(f"params.yaml: profile: unknown profile {params['profile']!r}; "
                            f"allowed: {', '.join(sorted(profiles))}")
    _check_grid_names(params)
    tables = (params.get("method_cfg") or {}).get("data_free", {}).get("tables") or {}
    for name in (params.get("method_cfg") or {}).get("data_free", {}).get("allocate") or []:
        if name not in tables:
            raise MpqbenchError(f"params.yaml: method_cfg.data_free.allocate names table "
                                f"{name!r}; allowed: {', '.join(sorted(tables))}")


def _check_grid_names(params: dict[str, Any]) -> None:
    """Every budget a grid cell names is declared under ``budgets``; every cut (``allocator``
    or ``allocator@budget``) and ``only`` entry names one of ``grid.allocators`` and of the
    cell's budgets; every profile named exists."""
    grid = params.get("grid")
    if not grid:
        return
    budgets = params.get("budgets") or {}
    allocators = grid["allocators"]
    if len(set(allocators)) != len(allocators):
        raise MpqbenchError(f"params.yaml: grid.allocators lists a name twice: {allocators}")
    for protocol, cell in grid["cells"].items():
        where = f"params.yaml: grid.cells.{protocol}"
        for name in cell["budgets"]:
            if name not in budgets:
                raise MpqbenchError(f"{where}.budgets: unknown budget {name!r}; declare it under "
                                    f"budgets: (declared: {', '.join(sorted(budgets)) or 'none'})")
        for kind, by_profile in (("seeds", cell["seeds"]), ("cut", cell.get("cut") or {})):
            for profile in by_profile:
                if profile not in params["profiles"]:
                    raise MpqbenchError(f"{where}.{kind}: unknown profile {profile!r}; allowed: "
                                        f"{', '.join(sorted(params['profiles']))}")
        for profile, seeds in cell["seeds"].items():
            if seeds < 1:
                raise MpqbenchError(f"{where}.seeds.{profile} = {seeds}: at least 1 seed")
        for profile, names in (cell.get("cut") or {}).items():
            for name in names:
                allocator, _, budget = name.partition("@")
                if allocator not in allocators:
                    raise MpqbenchError(f"{where}.cut.{profile}: {allocator!r} is not in "
                                        f"grid.allocators ({', '.join(allocators)})")
                if budget and budget not in cell["budgets"]:
                    raise MpqbenchError(f"{where}.cut.{profile}: {name!r} names budget "
                                        f"{budget!r}, not one of this protocol's budgets "
                                        f"({', '.join(cell['budgets'])}); write "
                                        "allocator or allocator@budget")
        for budget, names in (cell.get("only") or {}).items():
            if budget not in cell["budgets"]:
                raise MpqbenchError(f"{where}.only: {budget!r} is not one of this protocol's "
                                    f"budgets ({', '.join(cell['budgets'])})")
            for name in names:
                if name not in allocators:
                    raise MpqbenchError(f"{where}.only.{budget}: {name!r} is not in "
                                        f"grid.allocators ({', '.join(allocators)})")
    for profile in grid.get("qat") or {}:
        if profile not in params["profiles"]:
            raise MpqbenchError(f"params.yaml: grid.qat: unknown profile {profile!r}; allowed: "
                                f"{', '.join(sorted(params['profiles']))}")
