"""Uniform fake quantization in float, vectorized over channels, with straight-through rounding.

``fake_quantize(x, scale, zero_point, qmin, qmax, axis)`` computes
``(clamp(round(x / scale + zero_point), qmin, qmax) - zero_point) * scale`` with the rounding
replaced by the identity in the backward pass (the straight-through estimator, Bengio et al.
2013). Rounding is half-to-even and ``x / scale`` is taken as ``x * (1 / scale)``, the same
arithmetic as ``torch.fake_quantize_per_{tensor,channel}_affine``, so results match it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mpqbench.errors import MpqbenchError

MIN_SCALE = 1e-12  # a zero-range tensor gets scale 1 and quantizes to itself, never to NaN


@dataclass(frozen=True)
class QuantScheme:
    """How a tensor is quantized.

    signed: integer grid [-2^(b-1), 2^(b-1) - 1], else [0, 2^b - 1];
    symmetric: zero point 0 and a range symmetric about 0, else an affine range [min, max];
    per_channel: one scale (and zero point) per slice along ``axis`` (output channel, 0).
    """

    bits: int
    signed: bool = True
    symmetric: bool = True
    per_channel: bool = False
    axis: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 32:
            raise MpqbenchError(f"bit width {self.bits} is outside 1..32")
        if self.signed and self.bits < 2 and self.symmetric:
            raise MpqbenchError("a signed symmetric grid needs at least 2 bits")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _broadcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """Quantize-dequantize ``x`` (any shape) on the grid ``[qmin, qmax]``.

    ``scale`` and ``zero_point`` are scalars (per tensor) or 1-D of ``x.shape[axis]`` entries
    (per channel); zero points are integers held in a float tensor. Gradients flow to ``x``
    through the straight-through estimator (zero outside the clamp range) and to ``scale``.
    """
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point, x, axis)
    q = torch.clamp(round_ste(x * (1.0 / s) + z), qmin, qmax)
    return (q - z) * s


def minmax_range(
    x: torch.Tensor, per_channel: bool, axis: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of ``x`` per tensor, or per slice along ``axis``; shapes () or (C,)."""
    if not per_channel:
        return x.min(), x.max()
    flat = x.detach().transpose(0, axis).reshape(x.shape[axis], -1)
    return flat.min(dim=1).values, flat.max(dim=1).values


def scale_zero_point(
    lo: torch.Tensor, hi: torch.Tensor, scheme: QuantScheme
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point that map the range [lo, hi] onto the scheme's grid.

    Symmetric: scale = max(|lo|, |hi|) / qmax for signed grids, max / qmax for unsigned, zero
    point 0. Affine: the range is widened to contain 0, scale = (hi - lo) / (qmax - qmin),
    zero point = qmin - round(lo / scale), so that 0 is exactly representable.
    """
    lo, hi = lo.detach().float(), hi.detach().float()
    if scheme.symmetric:
        bound = torch.maximum(lo.abs(), hi.abs()) if scheme.signed else hi.clamp(min=0)
        scale = bound / scheme.qmax
        zero = torch.zeros_like(scale)
    else:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = (hi - lo) / (scheme.qmax - scheme.qmin)
        scale = torch.where(scale > MIN_SCALE, scale, torch.ones_like(scale))
        zero = torch.clamp(scheme.qmin - torch.round(lo / scale), scheme.qmin, scheme.qmax)
    scale = torch.where(scale > MIN_SCALE, scale, torch.ones_like(scale))
    return scale, zero


def quantize_tensor(x: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Min-max fake quantization of ``x`` under ``scheme`` (weights: per output channel)."""
    lo, hi = minmax_range(x, scheme.per_channel, scheme.axis)
    scale, zero = scale_zero_point(lo, hi, scheme)
    return fake_quantize(x, scale, zero, scheme.qmin, scheme.qmax,
                         scheme.axis if scheme.per_channel else None)


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient multiplied by ``factor`` in the backward pass."""
    return (x - x * factor).detach() + x * factor


def lsq_quantize(
    x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
    gradient_scale: float = 1.0,
) -> torch.Tensor:
    """LSQ fake quantization (Esser et al., ICLR 2020): ``clamp(round(x / s), qmin, qmax) * s``.

    The step ``s`` (scalar, or 1-D along ``axis``) is learned; its gradient is, per element,
    ``round(x/s) - x/s`` inside the range and ``qmin`` / ``qmax`` outside it, times
    ``gradient_scale`` (the paper uses ``1 / sqrt(numel * qmax)``, see ``lsq_gradient_scale``).
    """
    s = _broadcast(grad_scale(step, gradient_scale), x, axis)
    # clamp before rounding: the gradient mask and the step's gradient follow the paper's eq. 3
    # exactly (x / s just above qmax rounds into range but is still outside it)
    return round_ste(torch.clamp(x / s, qmin, qmax)) * s


def lsq_gradient_scale(numel: int, qmax: int) -> float:
    """Esser et al. (2020), sec. 2.2: ``g = 1 / sqrt(N * Q_P)``, N elements per step."""
    return 1.0 / (numel * max(qmax, 1)) ** 0.5


def lsq_init_step(x: torch.Tensor, qmax: int, per_channel: bool, axis: int = 0) -> torch.Tensor:
    """Esser et al. (2020): ``s0 = 2 * mean(|x|) / sqrt(Q_P)``, per tensor or per channel."""
    x = x.detach().abs()
    mean = x.transpose(0, axis).reshape(x.shape[axis], -1).mean(1) if per_channel else x.mean()
    return (2 * mean / max(qmax, 1) ** 0.5).clamp(min=1e-8)
