"""Per-sample gradients of the loss with respect to layer weights, with ``torch.func``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from mpqbench.errors import MpqbenchError
from mpqbench.runtime import progress

LABELS = ("dataset", "predicted")


@dataclass
class GradientStats:
    """Over N images, per layer: ``sq_norm`` = mean_i ||g_i||^2 (the empirical Fisher trace),
    ``sq_channel`` = mean_i of ||g_i||^2 per output channel, shape (C,), and ``mean_grad`` =
    mean_i g_i (the weight's shape). ``g_i`` is the gradient of image i's cross-entropy."""

    sq_norm: dict[str, float]
    sq_channel: dict[str, torch.Tensor]
    mean_grad: dict[str, torch.Tensor]
    images: int


def per_sample_gradient_stats(
    model: nn.Module, layers: list[str], batches: list[tuple[torch.Tensor, torch.Tensor]],
    labels: str = "dataset", chunk: int = 64,
) -> GradientStats:
    """One vectorized pass (``vmap(grad)``) per chunk of images; BN must be in eval mode.

    ``labels``: ``dataset`` (the true labels) or ``predicted`` (the model's own argmax).
    """
    if labels not in LABELS:
        raise MpqbenchError(f"labels {labels!r}: use one of {LABELS}")
    model = model.eval()
    weights = {f"{name}.weight": model.get_submodule(name).weight.detach() for name in layers}
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in weights}
    frozen.update(dict(model.named_buffers()))

    def loss(w, x, y):
        out = functional_call(model, {**frozen, **w}, (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    sq_channel = {name: torch.zeros(weights[f"{name}.weight"].shape[0]) for name in layers}
    grad_sum = {name: torch.zeros_like(weights[f"{name}.weight"]) for name in layers}
    n = 0
    chunks = [(x[i:i + chunk], y[i:i + chunk]) for x, y in batches
              for i in range(0, len(x), chunk)]
    for x, y in progress(chunks, "per-sample gradients", total=len(chunks)):
        if labels == "predicted":
            with torch.no_grad():
                y = model(x).argmax(1)
        grads = per_sample(weights, x, y)
        for name in layers:
            g = grads[f"{name}.weight"]  # (B, C, ...)
            sq_channel[name] += g.pow(2).flatten(2).sum(2).sum(0).cpu()
            grad_sum[name] += g.sum(0)
        n += len(x)
    return GradientStats(
        sq_norm={name: float(sq_channel[name].sum() / n) for name in layers},
        sq_channel={name: sq_channel[name] / n for name in layers},
        mean_grad={name: grad_sum[name] / n for name in layers},
        images=n,
    )
