"""Contract tests over every registry's names: a new entry is tested without editing a test.

Protocols have theirs in ``test_protocols.py``; params.yaml's names in ``test_params_schema``.
"""

import math
import random

import pytest
import torch
import torch.nn as nn

from mpqbench.cost import Budget, cost_summary, layer_costs
from mpqbench.models import MODELS, build_model
from mpqbench.quant.observers import OBSERVERS, make_observer
from mpqbench.quant.quantizers import QuantScheme, fake_quantize
from mpqbench.search import SOLVERS, search
from mpqbench.sensitivity import METRICS, SensitivityContext, compute
from mpqbench.synth import GENERATORS, SynthConfig, generate

from .test_search import _brute_force, _instance

EXACT_STATUS = "Optimal"  # a solver that says so must match brute force


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


@pytest.mark.parametrize("metric", METRICS.names())
def test_every_metric_scores_every_layer_and_width_once(metric):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g))
               for _ in range(2)]
    ctx = SensitivityContext(_cnn(), ["0", "3"], [2, 4, 8], 8, batches, "minmax", 0)
    table = compute(metric, ctx)
    frame = table.frame
    assert table.metric == metric and table.seconds > 0
    assert sorted(zip(frame.layer, frame.w_bits, strict=True)) == [
        (layer, b) for layer in ["0", "3"] for b in [2, 4, 8]]
    assert set(frame.a_bits) == {8}
    # finite; not necessarily >= 0: task_loss is a loss difference, below 0 where rounding
    # happens to help on these images
    assert all(math.isfinite(s) for s in frame.score)


@pytest.mark.parametrize("solver", SOLVERS.names())
def test_every_solver_meets_its_budget_and_never_beats_brute_force(solver):
    rng = random.Random(7)
    for _ in range(5):
        layers, table = _instance(rng, 5, [(2, 8), (4, 8), (6, 8), (8, 8)])
        low = cost_summary(layers, {ly.name: (2, 8) for ly in layers})["compression_ratio"]
        budget = Budget(compression_ratio=rng.uniform(4.5, 0.95 * low))
        best, _ = _brute_force(layers, table, budget, {})
        result = search(solver, table, layers, budget, {})
        assert set(result.bits) == {ly.name for ly in layers}
        assert cost_summary(layers, result.bits)["compression_ratio"] >= (
            budget.compression_ratio * (1 - 1e-9))
        assert result.objective >= best - 1e-9
        if result.status == EXACT_STATUS:
            assert result.objective == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("generator", GENERATORS.names())
def test_every_generator_makes_finite_labeled_images_of_the_input_shape(generator):
    config = SynthConfig(images=4, batch_size=2, iters=2, bn=0.01)  # bn: labeled_bn needs it
    data = generate(generator, _cnn(), (3, 6, 6), 3, config, "cpu", 0)
    assert data.x.shape == (4, 3, 6, 6) and torch.isfinite(data.x).all()
    assert data.y.shape == (4,) and 0 <= int(data.y.min()) and int(data.y.max()) < 3
    assert data.generator == generator and len(data.loss_history) == 2
    assert all(math.isfinite(v) for v in data.loss_history)


@pytest.mark.parametrize("observer", OBSERVERS.names())
def test_every_observer_gives_a_range_no_worse_than_a_tenfold_one(observer):
    scheme = QuantScheme(4, signed=True, symmetric=True)
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    chosen = make_observer(observer, scheme)
    chosen.observe(x)
    scale, zero = chosen.qparams()
    assert torch.isfinite(scale).all() and (scale > 0).all()
    error = (fake_quantize(x, scale, zero, scheme.qmin, scheme.qmax) - x).pow(2).mean()
    wide = (fake_quantize(x, 10 * scale, zero, scheme.qmin, scheme.qmax) - x).pow(2).mean()
    assert error < wide


@pytest.mark.parametrize("model", MODELS.names())
def test_every_model_builds_runs_and_has_costed_layers(model):
    spec = MODELS.get(model)
    net = build_model(model, 10).eval()
    side = 32 if "cifar10" in spec.datasets else 64
    with torch.no_grad():
        out = net(torch.randn(2, 3, side, side))
    assert out.shape == (2, 10)
    layers = layer_costs(net, (3, side, side))
    assert len(layers) >= 3 and all(ly.params > 0 and ly.macs > 0 for ly in layers)
    assert layers[0].image_input and not any(ly.image_input for ly in layers[1:])
