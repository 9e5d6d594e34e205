"""The cost model: per-layer weight counts and MACs, measured with forward hooks.

Conventions (one definition for every method, also in the README):
- quantizable layers are every ``Conv2d`` and ``Linear``, named by module path;
- ``params`` = weight elements of the layer (bias and BatchNorm excluded);
- ``macs`` = multiply-accumulates for one image at the dataset's input resolution:
  conv: output elements x (in_channels / groups) x kernel_h x kernel_w; linear: in x out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from mpqbench.errors import MpqbenchError

QUANTIZABLE = (nn.Conv2d, nn.Linear)
IMAGE_INPUT_BITS = 8  # an image is 8-bit by nature: the input of a layer fed by it costs 8 bits


@dataclass(frozen=True)
class LayerCost:
    """One quantizable layer: weight elements and MACs per image.

    ``image_input``: the layer reads the model's input itself. Its input is counted at
    ``IMAGE_INPUT_BITS`` whatever a policy's activation bits say (``quantize_model`` leaves
    that input unquantized), so every method's BitOps count it the same way.
    """

    name: str
    kind: str  # "conv" or "linear"
    params: int
    macs: int
    image_input: bool = False

    def input_bits(self, a_bits: int) -> int:
        """The bits this layer's input is counted at under a policy's ``a_bits``."""
        return IMAGE_INPUT_BITS if self.image_input else a_bits


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every Conv2d and Linear, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


@torch.no_grad()
def layer_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerCost]:
    """Measure every quantizable layer with one forward pass of one (C, H, W) image."""
    macs: dict[str, int] = {}
    image_fed: set[str] = set()
    hooks = []
    device = next(model.parameters()).device
    image = torch.zeros(1, *input_shape, device=device)

    def hook(name: str):
        def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if inputs and inputs[0] is image:
                image_fed.add(name)
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * (
                    module.kernel_size[1]
                )
                macs[name] = output[0].numel() * per_output
            else:
                macs[name] = output[0].numel() * module.in_features

        return record

    layers = quantizable_layers(model)
    for name, module in layers:
        hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(image)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [
        LayerCost(
            name=name,
            kind="conv" if isinstance(module, nn.Conv2d) else "linear",
            params=module.weight.numel(),
            macs=macs.get(name, 0),
            image_input=name in image_fed,
        )
        for name, module in layers
    ]


def cost_summary(layers: list[LayerCost], bits: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Size, BitOps and mean bits of a bit assignment ``{layer: (w_bits, a_bits)}``.

    - size_mib = sum(params * w_bits) / 8 / 2**20;
    - bitops_g = sum(macs * w_bits * input bits) / 1e9, the input bits being a_bits except
      for a layer fed by the image (``IMAGE_INPUT_BITS``);
    - compression_ratio = 32-bit size / this size, over the same layers;
    - mean_w_bits weighted by params, mean_a_bits weighted by MACs.
    """
    missing = [layer.name for layer in layers if layer.name not in bits]
    if missing:
        raise ValueError(f"no bits given for layers {missing}")
    weight_bits = sum(layer.params * bits[layer.name][0] for layer in layers)
    bitops = sum(layer.macs * bits[layer.name][0] * layer.input_bits(bits[layer.name][1])
                 for layer in layers)
    total_params = sum(layer.params for layer in layers)
    total_macs = sum(layer.macs for layer in layers)
    act_bits = sum(layer.macs * layer.input_bits(bits[layer.name][1]) for layer in layers)
    return {
        "size_mib": weight_bits / 8 / 2**20,
        "bitops_g": bitops / 1e9,
        "compression_ratio": 32 * total_params / weight_bits,
        "mean_w_bits": weight_bits / total_params,
        "mean_a_bits": act_bits / total_macs,
        "params": total_params,
        "macs": total_macs,
    }


Bits = dict[str, tuple[int, int]]  # layer name -> (w_bits, a_bits)


def parse_wa(spec: str | list | tuple) -> tuple[int, int]:
    """``"W4A8"`` or ``[4, 8]`` -> ``(4, 8)``: weight bits, activation bits."""
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        return int(spec[0]), int(spec[1])
    match = re.fullmatch(r"W(\d+)A(\d+)", str(spec))
    if not match:
        raise MpqbenchError(f"bit pair {spec!r} must look like 'W4A4' or [4, 4]")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Limit:
    """One linear constraint: sum over layers of ``coefficient(layer, w, a)`` <= ``bound``.

    ``key`` is the Budget field it comes from; ``user_value`` turns a total back into that
    field's unit (MiB, G, bits, or a compression ratio, where larger totals mean smaller ratios).
    """

    name: str
    unit: str
    scale: float  # bound and totals are reported divided by this (e.g. bits -> MiB)
    bound: float  # in the coefficient's own units (bits, bit-operations)
    kind: str  # "size", "bitops" or "mean_w_bits"
    key: str = ""  # the Budget field, e.g. "compression_ratio"
    ratio_of: float | None = None  # compression ratio: user value = ratio_of / total

    def coefficient(self, layer: LayerCost, w_bits: int, a_bits: int) -> float:
        if self.kind == "bitops":
            return float(layer.macs * w_bits * layer.input_bits(a_bits))
        return float(layer.params * w_bits)

    def total(self, layers: list[LayerCost], bits: Bits) -> float:
        return sum(self.coefficient(layer, *bits[layer.name]) for layer in layers)

    def recount(self, layers: list[LayerCost], bits: Bits) -> float:
        """The same total through the other code path, ``cost_summary`` (an independent check)."""
        summary = cost_summary(layers, bits)
        if self.kind == "bitops":
            return summary["bitops_g"] * 1e9
        return summary["size_mib"] * 8 * 2**20

    def user_value(self, total: float) -> float:
        """A total (the coefficient's units) in the unit the budget was written in."""
        if self.ratio_of is not None:
            return self.ratio_of / total if total > 0 else float("inf")
        return total / self.scale

    def user_text(self, total: float) -> str:
        """``compression_ratio 7.9x``, ``size_mib 0.12 MiB``, ``bitops_W4A4 1.15 G``."""
        if self.ratio_of is not None:
            return f"{self.key} {self.user_value(total):.6g}x"
        return f"{self.key or self.name} {self.user_value(total):.6g} {self.unit}"

    def infeasible_message(self, smallest: float, how: str) -> str:
        """The budget as written, and the best value that ``how`` can reach."""
        best = "largest" if self.ratio_of is not None else "smallest"
        return (f"budget {self.user_text(self.bound)} is infeasible: the {best} feasible value "
                f"is {self.user_value(smallest):.6g}{'x' if self.ratio_of else ' ' + self.unit} "
                f"({how})")


@dataclass(frozen=True)
class Budget:
    """Linear limits on a policy's cost, in any combination; all of them must hold.

    size_mib: weight size in MiB; compression_ratio: 32-bit size / size (>= this ratio);
    bitops_g: BitOps in G; bitops_equiv: (w, a) -> the BitOps of every searchable layer at
    W{w}A{a} (fixed layers at their own bits); mean_w_bits: params-weighted mean weight bits.
    Checked when built: at least one limit, every number finite and positive, bit pairs of
    positive integers.
    """

    size_mib: float | None = None
    compression_ratio: float | None = None
    bitops_g: float | None = None
    bitops_equiv: tuple[int, int] | None = None
    mean_w_bits: float | None = None

    def __post_init__(self) -> None:
        if self.is_empty():
            raise MpqbenchError(
                f"a budget needs at least one limit; use one or more of "
                f"{sorted(self.__dataclass_fields__)} (e.g. {{compression_ratio: 8}})")
        for key, value in self.__dict__.items():
            if key == "bitops_equiv" or value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value <= 0):
                raise MpqbenchError(
                    f"budget {key} must be a finite positive number, got {value!r}")
        if self.bitops_equiv is not None:
            pair = self.bitops_equiv
            if (not isinstance(pair, tuple) or len(pair) != 2
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                               for b in pair)):
                raise MpqbenchError(
                    f"budget bitops_equiv must be a (w_bits, a_bits) pair of positive integers "
                    f"such as 'W4A4' or [4, 4], got {pair!r}")

    def is_empty(self) -> bool:
        return all(v is None for v in self.__dict__.values())

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def limits(self, layers: list[LayerCost], fixed: Bits | None = None) -> list[Limit]:
        """The constraints over all layers (fixed ones included at their fixed bits)."""
        fixed = fixed or {}
        total_params = sum(layer.params for layer in layers)
        limits = []
        if self.size_mib is not None:
            limits.append(Limit("size", "MiB", 8 * 2**20, self.size_mib * 8 * 2**20, "size",
                                "size_mib"))
        if self.compression_ratio is not None:
            bound = 32 * total_params / self.compression_ratio
            limits.append(Limit("compression_ratio", "MiB", 8 * 2**20, bound, "size",
                                "compression_ratio", ratio_of=32 * total_params))
        if self.bitops_g is not None:
            limits.append(Limit("bitops", "G", 1e9, self.bitops_g * 1e9, "bitops", "bitops_g"))
        if self.bitops_equiv is not None:
            w, a = self.bitops_equiv
            pairs = {layer.name: fixed.get(layer.name, (w, a)) for layer in layers}
            bound = sum(layer.macs * pairs[layer.name][0] * layer.input_bits(pairs[layer.name][1])
                        for layer in layers)
            limits.append(Limit(f"bitops_W{w}A{a}", "G", 1e9, float(bound), "bitops",
                                f"bitops_W{w}A{a}"))
        if self.mean_w_bits is not None:
            limits.append(Limit("mean_w_bits", "bits", total_params,
                                self.mean_w_bits * total_params, "mean_w_bits", "mean_w_bits"))
        return limits

    @classmethod
    def from_dict(cls, spec: dict) -> Budget:
        """From params.yaml: e.g. ``{compression_ratio: 8}`` or ``{bitops_equiv: W4A4}``.

        Numbers written as strings in any float notation (``"1e-1"``, which YAML 1.1 reads as
        text) are read as numbers.
        """
        if not isinstance(spec, dict):
            raise MpqbenchError(f"a budget must be a mapping such as {{compression_ratio: 8}}, "
                                f"got {spec!r}")
        spec = dict(spec)
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise MpqbenchError(
                f"unknown budget keys {sorted(unknown)}; use {sorted(cls.__dataclass_fields__)}"
            )
        if spec.get("bitops_equiv") is not None:
            spec["bitops_equiv"] = parse_wa(spec["bitops_equiv"])
        for key, value in spec.items():
            if key != "bitops_equiv" and isinstance(value, str):
                try:
                    spec[key] = float(value)
                except ValueError:
                    raise MpqbenchError(
                        f"budget {key} must be a finite positive number, got {value!r}"
                    ) from None
        return cls(**spec)
