"""Reading params.yaml: the global keys and the settings of one profile."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mpqbench.errors import MpqbenchError

DEFAULT_PARAMS = Path("params.yaml")


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1's safe loader, plus YAML 1.2 floats: ``1e-1`` and ``2E5`` are numbers, as DVC
    (ruamel, YAML 1.2) reads them, not the strings PyYAML would make of them."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text the way params.yaml is read everywhere in the suite."""
    return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 (a SafeLoader subclass)


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise MpqbenchError(
            f"params file {path} not found; run from the repository root or pass --params PATH"
        )
    params = load_yaml(path.read_text())
    if not isinstance(params, dict) or "profiles" not in params:
        raise MpqbenchError(f"{path} has no 'profiles' section; see the README for its layout")
    return params


def profile_settings(profile: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of one profile (smoke, quick, paper), merged over the file's global keys.

    The result holds the profile's own keys plus `profile`, `seed`, `dataset` and `data`.
    """
    params = load_params() if params is None else params
    profiles = params["profiles"]
    if profile not in profiles:
        known = ", ".join(sorted(profiles))
        raise MpqbenchError(f"unknown profile {profile!r}; known: {known} (see params.yaml)")
    settings = {k: v for k, v in params.items() if k != "profiles"}
    settings.update(profiles[profile])
    settings["profile"] = profile
    return settings
