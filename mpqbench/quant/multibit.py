"""Models that run at any of several bit widths: multi-bit LSQ layers and per-bit BatchNorm.

LIMPQ (Tang et al., ECCV 2022) trains one network whose searchable layers each hold a weight
step and an activation step per candidate bit width, and a BatchNorm per candidate bit width
after every searchable conv; the BN in use follows the bit width of the conv before it (the
statistics of a 2-bit conv's output differ from a 6-bit one's, and sharing one BN pollutes
the learned steps that serve as importance indicators).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn

from mpqbench.cost import quantizable_layers
from mpqbench.errors import MpqbenchError
from mpqbench.quant.fold import conv_bn_pairs
from mpqbench.quant.modules import (
    FP_BITS,
    MultiBitLsqQuantizer,
    _set_submodule,
    quant_layers,
    quantize_model,
)


class MultiBitBatchNorm2d(nn.Module):
    """One BatchNorm2d per candidate bit width; ``bits`` selects the one in use.

    ``source``: the module path of the conv whose output it normalizes (its bit width picks
    the BN). Each copy starts from the FP model's BN (affine parameters and running stats).
    """

    def __init__(self, bn: nn.BatchNorm2d, candidates: Iterable[int], source: str) -> None:
        super().__init__()
        self.candidates = sorted(set(candidates))
        self.per_bits = nn.ModuleDict({str(b): copy.deepcopy(bn) for b in self.candidates})
        self.source = source
        self.bits = self.candidates[-1]

    def set_bits(self, bits: int) -> None:
        if bits not in self.candidates:
            raise MpqbenchError(f"bit width {bits} is not a candidate of the BN after "
                                f"{self.source} ({self.candidates})")
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_bits[str(self.bits)](x)

    def extra_repr(self) -> str:
        return f"source={self.source}, candidates={self.candidates}, active={self.bits}"


def multibit_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    searchable: list[str],
    candidates: list[int],
    step_range: tuple[float, float] | None = (1e-5, 1.0),
) -> nn.Module:
    """A copy of ``model`` for LIMPQ's indicator training.

    Every layer in ``searchable`` gets a per-tensor multi-bit LSQ quantizer for its weight
    (sigma init) and its input (init from the first batch at each width), and the BN after it
    (if any) becomes a MultiBitBatchNorm2d. Every other layer stays full precision, as the
    first conv and the classifier do in the authors' indicator training.
    """
    candidates = sorted(set(candidates))
    if not candidates:
        raise MpqbenchError("LIMPQ needs at least one candidate bit width")
    pairs = dict(conv_bn_pairs(model))
    bits = {name: (FP_BITS, FP_BITS) for name, _ in quantizable_layers(model)}
    bits.update({name: (candidates[-1], candidates[-1]) for name in searchable})
    quantized = quantize_model(model, bits, input_shape, "multi_lsq", "multi_lsq",
                               candidates=candidates, lsq_per_channel=False,
                               step_range=step_range, weight_init="sigma", positive="clamp")
    for conv in searchable:
        if conv in pairs:
            bn = quantized.get_submodule(pairs[conv])
            _set_submodule(quantized, pairs[conv], MultiBitBatchNorm2d(bn, candidates, conv))
    return quantized


def set_bits(model: nn.Module, bits: dict[str, int]) -> None:
    """Run every named multi-bit layer at ``W=b, A=b`` and its BN at ``b``.

    ``bits``: ``{layer: b}``; layers not named keep their width.
    """
    layers = dict(quant_layers(model))
    unknown = sorted(set(bits) - set(layers))
    if unknown:
        raise MpqbenchError(f"layers {unknown} are not quantized layers of the model")
    for name, b in bits.items():
        for quantizer in (layers[name].weight_quantizer, layers[name].input_quantizer):
            if isinstance(quantizer, MultiBitLsqQuantizer):
                quantizer.set_bits(b)
    for module in model.modules():
        if isinstance(module, MultiBitBatchNorm2d) and module.source in bits:
            module.set_bits(bits[module.source])

