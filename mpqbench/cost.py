"""The cost model: per-layer weight counts and MACs, measured with forward hooks.

Conventions (one definition for every method, also in the README):
- quantizable layers are every ``Conv2d`` and ``Linear``, named by module path;
- ``params`` = weight elements of the layer (bias and BatchNorm excluded);
- ``macs`` = multiply-accumulates for one image at the dataset's input resolution:
  conv: output elements x (in_channels / groups) x kernel_h x kernel_w; linear: in x out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

QUANTIZABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerCost:
    """One quantizable layer: weight elements and MACs per image."""

    name: str
    kind: str  # "conv" or "linear"
    params: int
    macs: int


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every Conv2d and Linear, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


@torch.no_grad()
def layer_costs(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerCost]:
    """Measure every quantizable layer with one forward pass of one (C, H, W) image."""
    macs: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
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
    device = next(model.parameters()).device
    try:
        model(torch.zeros(1, *input_shape, device=device))
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
        )
        for name, module in layers
    ]


def cost_summary(layers: list[LayerCost], bits: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Size, BitOps and mean bits of a bit assignment ``{layer: (w_bits, a_bits)}``.

    - size_mib = sum(params * w_bits) / 8 / 2**20;
    - bitops_g = sum(macs * w_bits * a_bits) / 1e9;
    - compression_ratio = 32-bit size / this size, over the same layers;
    - mean_w_bits weighted by params, mean_a_bits weighted by MACs.
    """
    missing = [layer.name for layer in layers if layer.name not in bits]
    if missing:
        raise ValueError(f"no bits given for layers {missing}")
    weight_bits = sum(layer.params * bits[layer.name][0] for layer in layers)
    bitops = sum(layer.macs * bits[layer.name][0] * bits[layer.name][1] for layer in layers)
    total_params = sum(layer.params for layer in layers)
    total_macs = sum(layer.macs for layer in layers)
    act_bits = sum(layer.macs * bits[layer.name][1] for layer in layers)
    return {
        "size_mib": weight_bits / 8 / 2**20,
        "bitops_g": bitops / 1e9,
        "compression_ratio": 32 * total_params / weight_bits,
        "mean_w_bits": weight_bits / total_params,
        "mean_a_bits": act_bits / total_macs,
        "params": total_params,
        "macs": total_macs,
    }
