import pytest
import torch

from mpqbench.errors import MpqbenchError
from mpqbench.quant.quantizers import (
    QuantScheme,
    fake_quantize,
    minmax_range,
    quantize_tensor,
    scale_zero_point,
)

BITS = range(2, 9)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed,symmetric", [(True, True), (False, False), (True, False)])
def test_per_tensor_matches_torch(bits, signed, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(64, 33, generator=g) * 3 + 0.5
    scheme = QuantScheme(bits, signed=signed, symmetric=symmetric)
    scale, zero = scale_zero_point(*minmax_range(x, False), scheme)
    ours = fake_quantize(x, scale, zero, scheme.qmin, scheme.qmax)
    oracle = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zero.item()),
                                                   scheme.qmin, scheme.qmax)
    assert torch.equal(ours, oracle)
    assert len(torch.unique(ours)) <= 2**bits


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("signed,symmetric", [(True, True), (False, False)])
def test_per_channel_matches_torch(bits, signed, symmetric):
    g = torch.Generator().manual_seed(100 + bits)
    x = torch.randn(16, 8, 3, 3, generator=g) * torch.rand(16, 1, 1, 1, generator=g) * 4
    scheme = QuantScheme(bits, signed=signed, symmetric=symmetric, per_channel=True)
    scale, zero = scale_zero_point(*minmax_range(x, True), scheme)
    assert scale.shape == (16,)
    ours = quantize_tensor(x, scheme)
    oracle = torch.fake_quantize_per_channel_affine(x, scale, zero.to(torch.int32), 0,
                                                    scheme.qmin, scheme.qmax)
    assert torch.equal(ours, oracle)
    # every channel's largest magnitude is a grid point for symmetric signed grids
    if symmetric:
        err = (ours - x).abs().amax(dim=(1, 2, 3))
        assert torch.all(err <= scale / 2 + 1e-6)


def test_zero_range_tensors_quantize_to_themselves():
    for scheme in (QuantScheme(4), QuantScheme(4, signed=False, symmetric=False),
                   QuantScheme(3, per_channel=True)):
        zeros = torch.zeros(4, 5)
        assert torch.equal(quantize_tensor(zeros, scheme), zeros)
        const = torch.full((4, 5), 0.37)
        out = quantize_tensor(const, scheme)
        assert not torch.isnan(out).any()
        assert torch.allclose(out, const, atol=1e-6)


def test_straight_through_gradient():
    x = torch.tensor([-3.0, -0.26, 0.1, 0.74, 2.9], requires_grad=True)
    out = fake_quantize(x, torch.tensor(0.5), torch.tensor(0.0), -4, 3)
    out.sum().backward()
    # identity inside the representable range [-2.0, 1.5], zero where the clamp bites
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert out.tolist() == [-2.0, -0.5, 0.0, 0.5, 1.5]


def test_bad_bit_widths_are_refused():
    with pytest.raises(MpqbenchError, match="bit width 0 is outside 1..32"):
        QuantScheme(0)
    with pytest.raises(MpqbenchError, match="outside 1..32"):
        QuantScheme(33)
