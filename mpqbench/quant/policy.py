"""Policy: ``{layer: {"w_bits", "a_bits"}}`` plus metadata, as versioned JSON.

Every method emits one and every protocol accepts any. Loading checks the schema version,
that every layer exists in the model (when the model's layer names are given) and every bit
width (``check_bits``, the one check every command and the records share); each error names
the layer and the fix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mpqbench.cost import IMAGE_INPUT_BITS, Bits, LayerCost
from mpqbench.errors import MpqbenchError

POLICY_SCHEMA_VERSION = 1
# weights use a signed symmetric grid, which needs a sign bit and one level bit; activations
# an unsigned affine one, where one bit is two levels
BIT_RANGE = {"w_bits": (2, 32), "a_bits": (1, 32)}


def check_bits(layers: dict[str, dict[str, Any]], source: str = "policy",
               candidates: list[int] | None = None, fixed: list[str] | None = None) -> None:
    """Every layer's ``w_bits`` and ``a_bits`` an integer in ``BIT_RANGE``; with
    ``candidates``, every weight width of a searchable (not ``fixed``) layer one of them, and
    every activation width too where the policy searched them (they differ between layers),
    except ``IMAGE_INPUT_BITS``: a layer fed by the image keeps its input at 8 bits whatever
    the search (LIMPQ gives it no activation rows), and a policy does not say which it is."""
    for name, bits in layers.items():
        for key, (low, high) in BIT_RANGE.items():
            value = bits[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise MpqbenchError(
                    f"{source}: layer {name!r} has {key} = {value!r}; {key} must be an integer "
                    f"in {low}..{high}" + (" (a signed weight grid needs a sign bit)"
                                           if key == "w_bits" else ""))
    if not candidates:
        return
    searched = {n: b for n, b in layers.items() if n not in set(fixed or [])}
    a_searched = len({b["a_bits"] for b in searched.values()}) > 1
    for name, bits in searched.items():
        for key in ("w_bits", "a_bits") if a_searched else ("w_bits",):
            if key == "a_bits" and bits[key] == IMAGE_INPUT_BITS:
                continue
            if bits[key] not in candidates:
                raise MpqbenchError(
                    f"{source}: layer {name!r} has {key} = {bits[key]}, outside the policy's "
                    f"bit_candidates {candidates}; pick one of them or widen bit_candidates")


@dataclass
class Policy:
    """Bits per layer; ``fixed`` names the layers kept out of the search (first conv, last FC)."""

    layers: dict[str, dict[str, int]]
    method: str
    budget: dict[str, Any] | None = None
    bit_candidates: list[int] | None = None
    granularity: str = "per_channel"
    fixed: list[str] = field(default_factory=list)
    schema_version: int = POLICY_SCHEMA_VERSION

    @classmethod
    def from_bits(cls, bits: Bits, method: str, **meta: Any) -> Policy:
        layers = {name: {"w_bits": int(w), "a_bits": int(a)} for name, (w, a) in bits.items()}
        return cls(layers=layers, method=method, **meta)

    def bits(self) -> Bits:
        return {name: (b["w_bits"], b["a_bits"]) for name, b in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path


def validate_policy(data: dict[str, Any], layer_names: list[str] | None = None,
                    source: str = "policy") -> Policy:
    """A Policy from its dict form, checked against the schema and the model's layers."""
    if data.get("schema_version") != POLICY_SCHEMA_VERSION:
        raise MpqbenchError(f"{source}: schema_version {data.get('schema_version')!r}; this "
                            f"mpqbench reads version {POLICY_SCHEMA_VERSION}")
    layers = data.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise MpqbenchError(f"{source}: 'layers' must map layer names to their bits")
    for name, bits in layers.items():
        if not isinstance(bits, dict) or set(bits) != {"w_bits", "a_bits"}:
            raise MpqbenchError(f"{source}: layer {name!r} needs exactly w_bits and a_bits")
    check_bits(layers, source, data.get("bit_candidates"), data.get("fixed"))
    if layer_names is not None:
        unknown = [n for n in layers if n not in set(layer_names)]
        if unknown:
            raise MpqbenchError(
                f"{source}: layer {unknown[0]!r} is not a quantizable layer of the model "
                f"({len(unknown)} unknown); known layers: {', '.join(layer_names)}"
            )
        missing = [n for n in layer_names if n not in layers]
        if missing:
            raise MpqbenchError(f"{source}: no bits for layers {missing}")
    try:
        return Policy(**data)
    except TypeError as exc:
        raise MpqbenchError(f"{source}: {exc}") from exc


def load_policy(path: str | Path, layer_names: list[str] | None = None) -> Policy:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MpqbenchError(f"cannot read policy {path} ({exc})") from exc
    return validate_policy(data, layer_names, str(path))


def default_fixed(layers: list[LayerCost], w_bits: int = 8, a_bits: int = 8) -> Bits:
    """The layers kept out of the search: the first conv and the last linear, at W8A8.

    Both still count in every budget. ``layers`` in definition order (``cost.layer_costs``).
    """
    convs = [layer.name for layer in layers if layer.kind == "conv"]
    linears = [layer.name for layer in layers if layer.kind == "linear"]
    names = ([convs[0]] if convs else []) + ([linears[-1]] if linears else [])
    return {name: (w_bits, a_bits) for name in names}


def fixed_layers(layers: list[LayerCost], settings: dict[str, Any]) -> Bits:
    """``default_fixed`` when ``settings["fix_first_last"]`` (the default) is true, else none."""
    return default_fixed(layers) if settings.get("fix_first_last", True) else {}
