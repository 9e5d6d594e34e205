"""The one place run ids, run keys and budget labels are spelled (no torch here)."""

from __future__ import annotations

import re

from mpqbench.cost import Budget
from mpqbench.errors import MpqbenchError

_ID_PART = re.compile(r"^[A-Za-z0-9_.-]+$")


def run_id(method: str, model_name: str, *parts: str | float) -> str:
    """``<method>-<model>-<part>-...``: the id of a RunRecord, and its file name.

    Numbers are written with ``:g``; each part must be file-name safe, e.g.
    ``run_id("saq", "resnet20", "W4A4", "qat_saq", "rho0.9")``."""
    words = [method, model_name, *(f"{p:g}" if isinstance(p, float) else str(p) for p in parts)]
    for word in words[2:]:
        if not _ID_PART.match(word):
            raise MpqbenchError(f"run id part {word!r}: use letters, digits, '_', '.' or '-'")
    return "-".join(words)


def run_key(method: str, model_name: str) -> str:
    """A method's results folder name under ``results/runs/`` (its DVC stage is
    ``<method>@<model>``)."""
    return f"{method}-{model_name}"


def protocol_tag(protocol: str) -> str:
    """A protocol as run ids write it: ``ptq-nearest`` -> ``nearest``, ``qat_lsq`` as is."""
    return protocol.removeprefix("ptq-")


def budget_label(budget: Budget) -> str:
    """A short, file-name-safe label: ``ratio8``, ``size0.1MiB``, ``bitops0.5G``, ``W4A4eq``,
    joined by ``_`` when the budget has several limits."""
    parts = []
    for key, value in budget.describe().items():
        if key == "bitops_equiv":
            parts.append(f"W{value[0]}A{value[1]}eq")
        else:
            short = {"compression_ratio": "ratio", "size_mib": "size", "bitops_g": "bitops",
                     "mean_w_bits": "meanw"}[key]
            unit = {"size_mib": "MiB", "bitops_g": "G"}.get(key, "")
            parts.append(f"{short}{value:g}{unit}")
    return re.sub(r"[^A-Za-z0-9.]+", "_", "_".join(parts))
