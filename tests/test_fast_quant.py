"""The fast quantizer paths (issue 20) against their references: torch's fused fake-quant for
static inputs without autograd, and the composed ``lsq_quantize`` for the LSQ function."""

import pytest
import torch

from mpqbench.quant.modules import StaticQuantizer, input_scheme
from mpqbench.quant.quantizers import (
    fake_quantize_inference,
    lsq_gradient_scale,
    lsq_quantize,
    lsq_quantize_fused,
)


def _with_half_steps(x: torch.Tensor, scale: float, zero: int) -> torch.Tensor:
    """``x`` with a third of its entries moved onto rounding ties ``(k + 0.5 - z) * s`` and onto
    the clamp's edges, where a different rounding or operation order would show."""
    k = torch.arange(x.numel()).reshape(x.shape) % 300 - 40
    ties = (k.float() + 0.5 - zero) * scale
    return torch.where(k % 3 == 0, ties, x)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("zero", [0, 3])
@pytest.mark.parametrize("shape", [(7, 3, 5, 5), (3, 1001)])  # odd sizes: vector tails
def test_inference_fake_quant_is_bit_identical_to_torch(bits, zero, shape):
    gen = torch.Generator().manual_seed(bits * 10 + zero)
    scale = torch.tensor(0.0731)
    qmax = 2**bits - 1
    x = _with_half_steps(torch.randn(shape, generator=gen) * 3, 0.0731, zero)
    oracle = torch.fake_quantize_per_tensor_affine(x, scale, torch.tensor(zero, dtype=torch.int32),
                                                   0, qmax)
    ours = fake_quantize_inference(x, scale, float(zero), 0, qmax)
    assert torch.equal(ours, oracle)
    assert len(torch.unique(ours)) <= 2**bits


def test_static_input_quantizer_takes_the_fast_path_only_without_autograd():
    quantizer = StaticQuantizer(input_scheme(4))
    quantizer.set_qparams(torch.tensor(0.05), torch.tensor(2.0))
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    with torch.no_grad():
        fast = quantizer(x)
    reference = quantizer(x)  # torch's kernel, with its straight-through gradient
    assert torch.equal(fast, reference.detach())
    reference.sum().backward()
    inside = ((x.detach() / 0.05).round() + 2 >= 0) & ((x.detach() / 0.05).round() + 2 <= 15)
    assert torch.equal(x.grad, inside.float())


def _both(x, step, qmin, qmax, axis, g, upstream):
    results = []
    for fn in (lsq_quantize, lsq_quantize_fused):
        xx = x.detach().clone().requires_grad_(True)
        ss = step.detach().clone().requires_grad_(True)
        y = fn(xx, ss, qmin, qmax, axis, g)
        y.backward(upstream)
        results.append((y.detach(), xx.grad, ss.grad))
    return results


@pytest.mark.parametrize("qmin,qmax", [(0, 15), (-8, 7), (-2, 1)])
def test_fused_lsq_matches_the_composed_reference_per_tensor(qmin, qmax):
    gen = torch.Generator().manual_seed(qmax)
    step = torch.tensor(0.21)
    x = _with_half_steps(torch.randn(6, 4, 9, 9, generator=gen) * 2, 0.21, 0)
    # the band just past qmax: x / s rounds into range but is outside it (eq. 3: no gradient
    # to x, the step's gradient is qmax)
    x.view(-1)[:5] = torch.tensor([qmax + 0.2, qmax + 0.49, qmin - 0.3, qmax, qmin]) * 0.21
    # the upstream gradient channels-last, as mkldnn's convolution backward hands it over
    upstream = torch.randn(6, 4, 9, 9, generator=gen).contiguous(
        memory_format=torch.channels_last)
    g = lsq_gradient_scale(x.numel(), qmax)
    (y_ref, dx_ref, ds_ref), (y, dx, ds) = _both(x, step, qmin, qmax, None, g, upstream)
    assert torch.equal(y, y_ref)
    assert torch.allclose(dx, dx_ref, rtol=1e-6, atol=0)
    assert torch.equal(dx == 0, dx_ref == 0)  # the same mask, the band included
    assert ds.item() == pytest.approx(ds_ref.item(), rel=1e-5)
    assert dx.view(-1)[:3].tolist() == [0.0, 0.0, 0.0]


def test_fused_lsq_matches_the_composed_reference_per_channel():
    gen = torch.Generator().manual_seed(1)
    step = torch.tensor([0.1, 0.3, 0.05])
    x = torch.randn(3, 8, 3, 3, generator=gen)
    upstream = torch.randn(3, 8, 3, 3, generator=gen)
    (y_ref, dx_ref, ds_ref), (y, dx, ds) = _both(x, step, -4, 3, 0, 0.5, upstream)
    assert torch.equal(y, y_ref)
    assert torch.allclose(dx, dx_ref, rtol=1e-6, atol=0)
    assert ds.shape == (3,) and torch.allclose(ds, ds_ref, rtol=1e-5, atol=1e-7)


def test_fused_lsq_without_autograd_is_bit_identical_and_leaves_no_graph():
    gen = torch.Generator().manual_seed(2)
    step = torch.tensor(0.13, requires_grad=True)
    x = _with_half_steps(torch.randn(5, 700, generator=gen), 0.13, 0)
    for g in (1.0, 0.0137):  # the step's gradient scale changes its forward value in float
        with torch.no_grad():
            fast = lsq_quantize_fused(x, step, 0, 15, gradient_scale=g)
            reference = lsq_quantize(x, step, 0, 15, gradient_scale=g)
        assert torch.equal(fast, reference) and fast.grad_fn is None
        with_graph = lsq_quantize_fused(x, step, 0, 15, gradient_scale=g)
        assert torch.equal(with_graph.detach(), reference)
    # a frozen step on an input that needs no gradient: nothing to differentiate either
    assert lsq_quantize_fused(x, step.detach(), 0, 15).grad_fn is None
