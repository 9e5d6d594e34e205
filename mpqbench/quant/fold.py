"""Folding BatchNorm into the convolution before it, for post-training quantization.

With ``k = gamma / sqrt(running_var + eps)`` per output channel, a conv followed by BN in
eval mode equals one conv with weight ``W * k`` and bias ``beta + (b - running_mean) * k``
(Jacob et al. 2018, sec. 3.2). The pairs are found on the traced graph (``torch.fx``): a BN
whose only input is a conv's output, that output used nowhere else. Module paths stay the
same; each folded BN becomes ``nn.Identity``.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
import torch.nn as nn

from mpqbench.errors import MpqbenchError


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, BN path) of every foldable pair, in graph order."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # tracing failures come in many exception types
        raise MpqbenchError(f"cannot trace {type(model).__name__} to find conv-BN pairs "
                            f"({exc}); fold BN by hand or use a traceable model") from exc
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1):
            pairs.append((source.target, node.target))
    return pairs


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics) into ``conv`` in place."""
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(k.reshape(-1, *([1] * (conv.weight.dim() - 1))))
    conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * k)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv-BN pair folded."""
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in conv_bn_pairs(folded):
        fold_conv_bn(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        parent_name, _, child = bn_name.rpartition(".")
        parent = folded.get_submodule(parent_name) if parent_name else folded
        setattr(parent, child, nn.Identity())
    return folded
