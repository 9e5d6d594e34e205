import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.errors import MpqbenchError
from mpqbench.sensitivity import METRICS, SensitivityContext, compute
from mpqbench.sensitivity.gradients import per_sample_gradient_stats
from mpqbench.sensitivity.hessian_trace import hutchinson_traces


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(5 * 2 * 2, 3)).eval()


def test_per_sample_squared_gradients_equal_a_loop_of_single_backward_passes():
    model = _small_cnn()
    x, y = torch.randn(7, 3, 6, 6), torch.randint(0, 3, (7,))
    layers = ["0", "2", "5"]
    stats = per_sample_gradient_stats(model, layers, [(x[:4], y[:4]), (x[4:], y[4:])], chunk=3)
    sq = {name: torch.zeros(model.get_submodule(name).weight.shape[0]) for name in layers}
    mean = {name: torch.zeros_like(model.get_submodule(name).weight) for name in layers}
    for i in range(7):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name in layers:
            g = model.get_submodule(name).weight.grad
            sq[name] += g.pow(2).flatten(1).sum(1) / 7
            mean[name] += g / 7
    for name in layers:
        assert torch.allclose(stats.sq_channel[name], sq[name], rtol=1e-4, atol=1e-9)
        assert stats.sq_norm[name] == pytest.approx(sq[name].sum().item(), rel=1e-4)
        assert torch.allclose(stats.mean_grad[name], mean[name], rtol=1e-4, atol=1e-7)
    assert stats.images == 7
    predicted = per_sample_gradient_stats(model, layers, [(x, y)], labels="predicted")
    assert predicted.sq_norm["5"] != pytest.approx(stats.sq_norm["5"])
    with pytest.raises(MpqbenchError, match="labels 'soft'"):
        per_sample_gradient_stats(model, layers, [(x, y)], labels="soft")


def _exact_trace(model, name, x, y):
    w0 = model.get_submodule(name).weight.detach().clone()

    def loss(w):
        params = {k: v.detach() for k, v in model.named_parameters()}
        params[f"{name}.weight"] = w
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, w0).reshape(w0.numel(), -1).trace().item()


@pytest.mark.parametrize("probes", ["per_layer", "joint"])
def test_hutchinson_matches_the_exact_hessian_trace_within_its_spread(probes):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    est = hutchinson_traces(model, ["0", "2"], [(x[:10], y[:10]), (x[10:], y[10:])],
                            max_iters=2000, rel_se=0.0, probes=probes)
    assert est.samples == {"0": 2000, "2": 2000}
    assert est.converged == {"0": False, "2": False}  # rel_se 0 is never reached
    for name in ("0", "2"):
        exact = _exact_trace(model, name, x, y)
        assert abs(est.mean[name] - exact) <= 4 * est.stderr[name]
        assert est.stderr[name] < 0.2 * abs(exact)


def test_hutchinson_stops_each_layer_at_its_relative_standard_error():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    est = hutchinson_traces(model, ["0", "2"], [(x, y)], max_iters=3000, rel_se=0.05,
                            min_iters=8)
    for name in ("0", "2"):
        assert est.converged[name] and 8 <= est.samples[name] < 3000
        assert est.stderr[name] <= 0.05 * abs(est.mean[name])
        # stopped at the first sample count that met the target, not later
        assert abs(est.mean[name] - _exact_trace(model, name, x, y)) <= 4 * est.stderr[name]
    assert est.samples["0"] != est.samples["2"]  # each layer on its own schedule


def test_a_trace_indistinguishable_from_zero_is_floored_and_flagged():
    from mpqbench.sensitivity.hessian_trace import TraceEstimate

    est = TraceEstimate(mean={"a": 5.0, "b": -9.6, "c": 0.5}, stderr={"a": 0.2, "b": 16.7,
                        "c": 1.0}, samples={"a": 20, "b": 15, "c": 15},
                        converged={"a": True, "b": False, "c": False})
    used, floored = est.floored()
    assert used["a"] == 5.0
    assert floored == ["b", "c"]
    assert used["b"] == pytest.approx(1.96 * 16.7) and used["c"] == pytest.approx(1.96)


def test_unknown_probes_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(MpqbenchError, match="unknown Hutchinson probes 'single'"):
        hutchinson_traces(model, ["0"], [(torch.randn(2, 4), torch.tensor([0, 1]))],
                          probes="single")


class _TwoHeads(nn.Module):
    """logits = head_a(h) + 10 * head_b(h): quantization noise in head_b reaches the loss
    amplified ten times, so head_b is the most sensitive layer by construction."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.stem = nn.Linear(8, 16)
        self.head_a = nn.Linear(16, 4)
        self.head_b = nn.Linear(16, 4)
        with torch.no_grad():
            self.head_b.weight.copy_(self.head_a.weight)  # same weights, same rounding error

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head_a(h) + 10 * self.head_b(h)


@pytest.mark.parametrize("metric,options", [("first_order", {}),
                                            ("first_order", {"variant": "taylor"}),
                                            ("hessian_trace", {"max_iters": 50}),
                                            ("fisher_fit", {})])
def test_every_metric_ranks_the_amplified_layer_first(metric, options):
    model = _TwoHeads().eval()
    x = torch.randn(64, 8)
    y = model(x).argmax(1)  # labels the model mostly gets right, as after training
    y[::4] = (y[::4] + 1) % 4
    ctx = SensitivityContext(model, ["stem", "head_a", "head_b"], [2, 4, 8], 8, [(x, y)],
                             weight_observer="minmax")
    table = compute(metric, ctx, **options)
    frame = table.frame
    assert set(frame.columns) == {"layer", "w_bits", "a_bits", "score"} and len(frame) == 9
    taylor = options.get("variant") == "taylor"
    for b in (2, 4):
        at_b = frame[frame.w_bits == b].set_index("layer").score
        assert at_b["head_b"] > 5 * at_b["head_a"]
        if not taylor:  # the Taylor term is a signed projection, not an energy: no ranking
            assert at_b.idxmax() == "head_b", (b, at_b.to_dict())
    per_layer = frame.pivot(index="layer", columns="w_bits", values="score")
    if not taylor:
        assert (per_layer[2] > per_layer[4]).all() and (per_layer[4] > per_layer[8]).all()
    assert table.seconds > 0 and table.images == 64 and table.forward_images >= 64
    assert {"first_order", "fisher_fit", "hessian_trace"} <= set(METRICS.names())


def test_first_order_and_fit_scores_equal_an_independent_computation():
    """Scores rebuilt from a loop of single-image backward passes and torch's own per-channel
    fake quantizer (min-max, symmetric): (F_l / n_l) ||dW||^2 and sum_c F_c Delta_c^2 / 12."""
    model = _small_cnn()
    x, y = torch.randn(6, 3, 6, 6), torch.randint(0, 3, (6,))
    layers = ["0", "2", "5"]
    ctx = SensitivityContext(model, layers, [3, 5], 8, [(x, y)], weight_observer="minmax")
    first = compute("first_order", ctx).frame.set_index(["layer", "w_bits"]).score
    fit = compute("fisher_fit", ctx).frame.set_index(["layer", "w_bits"]).score
    sq = {name: torch.zeros(model.get_submodule(name).weight.shape[0]) for name in layers}
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name in layers:
            sq[name] += model.get_submodule(name).weight.grad.pow(2).flatten(1).sum(1) / 6
    for name in layers:
        w = model.get_submodule(name).weight.detach()
        for b in (3, 5):
            qmax = 2 ** (b - 1) - 1
            scale = w.abs().flatten(1).amax(1) / qmax
            q = torch.fake_quantize_per_channel_affine(
                w, scale, torch.zeros(w.shape[0], dtype=torch.int32), 0, -qmax - 1, qmax)
            expected = sq[name].sum() / w.numel() * (q - w).pow(2).sum()
            assert first[name, b] == pytest.approx(expected.item(), rel=1e-4)
            assert fit[name, b] == pytest.approx((sq[name] * scale.pow(2)).sum().item() / 12,
                                                 rel=1e-4)
