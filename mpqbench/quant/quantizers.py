"""Uniform fake quantization in float, vectorized over channels, with straight-through rounding.

``fake_quantize(x, scale, zero_point, qmin, qmax, axis)`` computes
``(clamp(round(x / scale + zero_point), qmin, qmax) - zero_point) * scale`` with the rounding
replaced by the identity in the backward pass (the straight-through estimator, Bengio et al.
2013). Rounding is half-to-even and ``x / scale`` is taken as ``x * (1 / scale)``, the same
arithmetic as ``torch.fake_quantize_per_{tensor,channel}_affine``, so results match it exactly.
"""

from __future__ import annotations

import functools
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


@functools.cache
def _open_range(qmin: int, qmax: int, dtype: torch.dtype) -> tuple[float, float]:
    """The floats of ``dtype`` next to ``qmin`` and ``qmax`` inside ``[qmin, qmax]``."""
    lo, hi = torch.tensor([qmin, qmax], dtype=dtype)
    inf = torch.tensor(float("inf"), dtype=dtype)
    return float(torch.nextafter(lo, inf)), float(torch.nextafter(hi, -inf))


class _LsqFunction(torch.autograd.Function):
    """``lsq_quantize`` with the step's gradient scale applied outside, in fewer passes and
    allocations: the forward pass keeps the in-range mask and each element's ``d y / d s``,
    and the backward pass forms both gradients from them (eq. 3 of Esser et al. 2020) instead
    of walking the six ops of the composed form. Same forward values as ``lsq_quantize`` (its
    straight-through sum ``v + (round(v) - v)`` is exact); gradients equal it to float
    rounding (tests/test_lsq_observers.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int,
                axis: int | None) -> torch.Tensor:
        s = _broadcast(step, x, axis)
        scaled = x / s
        # clamped to the floats next inside [qmin, qmax]: rounding gives the same levels, and
        # the range's ends count as outside, as in eq. 3 (and torch's clamp backward)
        levels = scaled.clamp(*_open_range(qmin, qmax, x.dtype))
        # 1.0 strictly inside the range, 0.0 elsewhere: a float mask (torch's bool kernels are
        # several times slower than its float ones here)
        inside = torch.eq(levels, scaled, out=torch.empty_like(scaled))
        levels.round_()
        # d y / d s per element: round(x / s) - x / s inside the range, qmin or qmax outside
        per_element = torch.addcmul(levels, scaled, inside, value=-1.0, out=scaled)
        ctx.save_for_backward(inside, per_element)
        ctx.axis = axis
        return levels.mul_(s)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inside, per_element = ctx.saved_tensors
        # grad may come channels-last from mkldnn's convolution backward: no reshape (a copy)
        # and no layout change (measured slower here than the mixed-layout products)
        grad_x = grad * inside
        product = grad * per_element
        if ctx.axis is None:
            grad_step = product.sum()
        else:
            product = product.transpose(0, ctx.axis)
            grad_step = product.reshape(product.shape[0], -1).sum(1)
        return grad_x, grad_step, None, None, None


def lsq_quantize_fused(
    x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
    gradient_scale: float = 1.0,
) -> torch.Tensor:
    """``lsq_quantize`` in fewer passes: the QAT path (``LsqQuantizer``). Without autograd
    (evaluation) four in-place passes, bit-identical to ``lsq_quantize``; with it the
    ``_LsqFunction`` pair, whose gradients match ``lsq_quantize``'s to float rounding."""
    # the forward value of grad_scale's step is (s - s g) + s g, not always s in float: both
    # paths use it, as lsq_quantize does
    step = grad_scale(step, gradient_scale)
    if not (torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)):
        s = _broadcast(step, x, axis)
        return (x / s).clamp_(qmin, qmax).round_().mul_(s)
    return _LsqFunction.apply(x, step, qmin, qmax, axis)


def fake_quantize_inference(x: torch.Tensor, scale: torch.Tensor, zero_point: float, qmin: int,
                            qmax: int) -> torch.Tensor:
    """Per-tensor quantize-dequantize without autograd, bit-identical to
    ``torch.fake_quantize_per_tensor_affine`` (``round(x * (1 / s)) + z``, clamped, minus
    ``z``, times ``s``; tests/test_quantizers.py) but in four to six vectorized in-place
    passes: torch's CPU kernel also writes the gradient mask and does not vectorize the
    rounding (about 4x slower on 2 cores, benchmarks/quant_throughput.py)."""
    levels = torch.mul(x, torch.reciprocal(scale)).round_()  # float32 1 / s, as the kernel
    if zero_point:
        return levels.add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)
    return levels.clamp_(qmin, qmax).mul_(scale)


def lsq_gradient_scale(numel: int, qmax: int) -> float:
    """Esser et al. (2020), sec. 2.2: ``g = 1 / sqrt(N * Q_P)``, N elements per step."""
    return 1.0 / (numel * max(qmax, 1)) ** 0.5


def lsq_init_step(x: torch.Tensor, qmax: int, per_channel: bool, axis: int = 0) -> torch.Tensor:
    """Esser et al. (2020): ``s0 = 2 * mean(|x|) / sqrt(Q_P)``, per tensor or per channel."""
    x = x.detach().abs()
    mean = x.transpose(0, axis).reshape(x.shape[axis], -1).mean(1) if per_channel else x.mean()
    return (2 * mean / max(qmax, 1) ** 0.5).clamp(min=1e-8)
