import pytest
import torch

from mpqbench.errors import MpqbenchError
from mpqbench.quant.modules import MultiBitLsqQuantizer, weight_scheme
from mpqbench.quant.observers import OBSERVERS, make_observer
from mpqbench.quant.quantizers import (
    QuantScheme,
    fake_quantize,
    lsq_gradient_scale,
    lsq_init_step,
    lsq_quantize,
    lsq_quantize_fused,
    scale_zero_point,
)

LSQ_FORMS = pytest.mark.parametrize("lsq", [lsq_quantize, lsq_quantize_fused],
                                    ids=["composed", "fused"])


def _hand_lsq_grads(x, s, qmin, qmax, upstream, g):
    """Esser et al. (2020), eq. 3, written out element by element."""
    ds = torch.zeros(())
    dx = torch.zeros_like(x)
    for i, v in enumerate(x.flatten().tolist()):
        ratio = v / s
        u = upstream.flatten()[i].item()
        if ratio <= qmin:
            ds += u * qmin
        elif ratio >= qmax:
            ds += u * qmax
        else:
            ds += u * (round(ratio) - ratio)
            dx.view(-1)[i] = u
    return dx, ds * g


@LSQ_FORMS
@pytest.mark.parametrize("bits,signed", [(2, True), (3, False), (4, True), (8, False)])
def test_lsq_gradients_equal_the_hand_derived_formula(bits, signed, lsq):
    gen = torch.Generator().manual_seed(bits)
    x = (torch.randn(40, generator=gen) * 2).requires_grad_(True)
    scheme = QuantScheme(bits, signed=signed)
    s = torch.tensor(0.37, requires_grad=True)
    g = lsq_gradient_scale(x.numel(), scheme.qmax)
    assert g == pytest.approx(1 / (40 * scheme.qmax) ** 0.5)
    upstream = torch.randn(40, generator=gen)
    y = lsq(x, s, scheme.qmin, scheme.qmax, gradient_scale=g)
    y.backward(upstream)
    dx, ds = _hand_lsq_grads(x.detach(), 0.37, scheme.qmin, scheme.qmax, upstream, g)
    assert torch.allclose(x.grad, dx)
    assert s.grad.item() == pytest.approx(ds.item(), rel=1e-5, abs=1e-7)
    # forward: the same grid as the affine fake quantizer with zero point 0
    expected = torch.clamp(torch.round(x.detach() / 0.37), scheme.qmin, scheme.qmax) * 0.37
    assert torch.allclose(y.detach(), expected)


@LSQ_FORMS
def test_per_channel_lsq_step_gradients_are_per_channel(lsq):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, generator=gen).requires_grad_(True)
    step = torch.tensor([0.2, 0.5, 1.0], requires_grad=True)
    upstream = torch.randn(3, 5, generator=gen)
    lsq(w, step, -8, 7, axis=0, gradient_scale=0.5).backward(upstream)
    for c in range(3):
        _, ds = _hand_lsq_grads(w.detach()[c], step[c].item(), -8, 7, upstream[c], 0.5)
        assert step.grad[c].item() == pytest.approx(ds.item(), rel=1e-5, abs=1e-7)


def test_lsq_init_step_and_multi_bit_steps_are_separate():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert torch.allclose(lsq_init_step(w, 7, True), torch.tensor([4.0, 1.0]) / 7**0.5)
    quantizer = MultiBitLsqQuantizer([2, 4, 8], weight_scheme, channels=2)
    for b in (2, 4, 8):
        quantizer.per_bits[str(b)].init_from(w)
    quantizer.set_bits(4)
    quantizer(w).sum().backward()
    raw = {b: quantizer.per_bits[str(b)].step for b in (2, 4, 8)}
    assert raw[4].grad is not None
    assert raw[2].grad is None and raw[8].grad is None
    assert not torch.equal(quantizer.step(2), quantizer.step(8))
    with pytest.raises(MpqbenchError, match="not a candidate"):
        quantizer.set_bits(3)


def test_minmax_observer_tracks_the_range_over_batches():
    scheme = QuantScheme(8, signed=False, symmetric=False)
    observer = make_observer("minmax", scheme)
    observer.observe(torch.tensor([0.5, 2.0]))
    observer.observe(torch.tensor([-1.0, 1.0]))
    lo, hi = observer.range()
    assert lo.item() == -1.0 and hi.item() == 2.0
    scale, zero = observer.qparams()
    assert (scale.item(), zero.item()) == pytest.approx((3.0 / 255, 85.0))
    with pytest.raises(MpqbenchError, match="saw no data"):
        make_observer("minmax", scheme).qparams()
    with pytest.raises(MpqbenchError, match="unknown observer 'max'; known: minmax, mse"):
        make_observer("max", scheme)
    assert OBSERVERS.names() == ["minmax", "mse", "percentile"]


def test_percentile_observer_clips_outliers_and_averages_batches():
    scheme = QuantScheme(8, signed=False, symmetric=False)
    x = torch.linspace(0, 1, 10001)
    x[-1] = 100.0  # one outlier
    observer = make_observer("percentile", scheme)
    observer.observe(x)
    observer.observe(x * 3)
    lo, hi = observer.range()
    expected = (torch.quantile(x, 0.9999) + torch.quantile(x * 3, 0.9999)) / 2
    assert hi.item() == pytest.approx(expected.item())
    assert hi.item() < 5 and lo.item() == pytest.approx(0.0, abs=1e-3)


def test_mse_observer_beats_minmax_on_heavy_tails_per_channel():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 200, generator=gen)
    w[:, 0] = 12.0  # one outlier per channel stretches the min-max range
    scheme = QuantScheme(4, per_channel=True)

    def error(name):
        observer = make_observer(name, scheme)
        observer.observe(w)
        scale, zero = observer.qparams()
        return (fake_quantize(w, scale, zero, scheme.qmin, scheme.qmax, 0) - w).pow(2).mean(1)

    mse, minmax = error("mse"), error("minmax")
    assert (mse <= minmax + 1e-7).all() and mse.mean() < 0.8 * minmax.mean()
    # brute force over the same grid for channel 0 gives the same error
    best = min(
        (fake_quantize(w[0], *scale_zero_point(a * w[0].min(), a * w[0].max(), scheme),
                       scheme.qmin, scheme.qmax) - w[0]).pow(2).mean().item()
        for a in torch.linspace(0.01, 1.0, 100).tolist())
    assert mse[0].item() == pytest.approx(best, rel=1e-5)


def test_zero_range_input_quantizes_to_itself():
    scheme = QuantScheme(4, signed=False, symmetric=False)
    for name in OBSERVERS.names():
        observer = make_observer(name, scheme)
        observer.observe(torch.zeros(10))
        scale, zero = observer.qparams()
        out = fake_quantize(torch.zeros(10), scale, zero, scheme.qmin, scheme.qmax)
        assert torch.equal(out, torch.zeros(10))
