import pytest
import torch
import torch.nn as nn

from mpqbench.cost import layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.models import pretrained_model
from mpqbench.ptq import ROUNDINGS, PtqConfig, adaround_layer, run_ptq
from mpqbench.quant.modules import quant_layers, quantize_model
from mpqbench.quant.policy import default_fixed
from mpqbench.search import uniform_bits


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return pretrained_model("resnet20", "cifar10", 10, tmp_path_factory.mktemp("ckpt"))


def test_uniform_ptq_on_real_cifar(published, cifar_splits):
    layers = layer_costs(published, cifar_splits.input_shape)
    fixed = default_fixed(layers)
    config = PtqConfig(calib_images=256, batch_size=128)
    fp = evaluate(published, cifar_splits.test, 500, max_images=1000)
    accuracy = {}
    for w in (8, 2):
        result = run_ptq(published, uniform_bits(layers, w, 8, fixed), cifar_splits.train,
                         cifar_splits.input_shape, "nearest", config)
        accuracy[w] = evaluate(result.model, cifar_splits.test, 500, max_images=1000).top1
        assert set(result.seconds) == {"fold_quantize_s", "rounding_s", "calibrate_s", "total_s"}
    assert abs(fp.top1 - accuracy[8]) <= 1.0  # measured 0.08 points on all 10,000 images
    assert accuracy[2] < 40  # 2-bit nearest rounding breaks ResNet-20: the quantizer is live


def test_adaround_is_deterministic_and_stays_on_the_grid(published, cifar_splits):
    layers = layer_costs(published, cifar_splits.input_shape)
    bits = uniform_bits(layers, 3, 8, default_fixed(layers))
    config = PtqConfig(calib_images=64, batch_size=32, adaround_iters=20,
                       adaround_batch_size=16)
    runs = [run_ptq(published, bits, cifar_splits.train, cifar_splits.input_shape, "adaround",
                    config, seed=5) for _ in range(2)]
    first, second = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert set(runs[0].layer_stats) == {layer.name for layer in layers}
    for name, module in quant_layers(runs[0].model):
        q = module.weight_quantizer
        levels = module.weight / q.scale.reshape(-1, *([1] * (module.weight.dim() - 1)))
        assert torch.allclose(levels, levels.round(), atol=1e-3), name
        assert levels.min() >= q.scheme.qmin - 1e-3 and levels.max() <= q.scheme.qmax + 1e-3
    with pytest.raises(MpqbenchError, match="unknown rounding 'stochastic'"):
        run_ptq(published, bits, cifar_splits.train, cifar_splits.input_shape, "stochastic")


def test_adaround_reconstructs_a_layer_better_than_nearest():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    qmodel = quantize_model(nn.Sequential(layer), {"0": (3, 32)}, (64,))
    module = qmodel[0]
    x = torch.randn(512, 64) @ torch.randn(64, 64) * 0.3  # correlated inputs, as in a network
    target = layer(x).detach()
    nearest_weight = module.quantized_weight().detach()
    nearest_error = (nn.functional.linear(x, nearest_weight, layer.bias) - target).pow(2).sum(1)
    floor = torch.floor(module.weight / module.weight_quantizer.scale[:, None])
    config = PtqConfig(adaround_iters=400, adaround_batch_size=64)
    stats = adaround_layer(module, x, target, config, torch.Generator().manual_seed(0))
    ada_error = (module(x) - target).pow(2).sum(1).detach()
    assert ada_error.mean() < 0.8 * nearest_error.mean()
    levels = module.weight.detach() / module.weight_quantizer.scale[:, None]
    assert torch.isin((levels - floor).round(), torch.tensor([0.0, 1.0])).all()  # floor or ceil
    assert 0 < stats["flipped_vs_nearest"] < 0.5


def test_ptq_config_refuses_unknown_keys():
    with pytest.raises(MpqbenchError, match=r"unknown ptq settings \['iters'\]"):
        PtqConfig.from_dict({"iters": 3})
    assert PtqConfig.from_dict({"adaround_beta": [10, 2]}).adaround_beta == (10.0, 2.0)


def _adaround_layer_by_layer(qmodel, fp_model, images, config, seed):
    """The quadratic oracle: before each layer, rerun both models from the start up to it."""
    generator = torch.Generator().manual_seed(seed)
    for name, module in quant_layers(qmodel):
        captured = {}
        hooks = [module.register_forward_pre_hook(
                     lambda m, i, c=captured: c.__setitem__("input", i[0].detach())),
                 fp_model.get_submodule(name).register_forward_hook(
                     lambda m, i, o, c=captured: c.__setitem__("target", o.detach()))]
        with torch.no_grad():
            qmodel(images)
            fp_model(images)
        for hook in hooks:
            hook.remove()
        adaround_layer(module, captured["input"], captured["target"], config, generator)


def test_one_pass_adaround_matches_rerunning_the_model_before_every_layer():
    """The single forward pass with the FP model in a second thread rounds every weight
    exactly as re-running both models up to each layer does (inputs from rounded layers)."""
    torch.manual_seed(0)
    fp = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                       nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    bits = {"0": (3, 32), "2": (2, 32), "5": (3, 32)}
    images = torch.randn(48, 3, 8, 8)
    config = PtqConfig(adaround_iters=30, adaround_batch_size=16)
    one_pass = quantize_model(fp, bits, (3, 8, 8))
    stats = ROUNDINGS.get("adaround")(one_pass, fp, [images], config, 5)
    oracle = quantize_model(fp, bits, (3, 8, 8))
    _adaround_layer_by_layer(oracle, fp, images, config, 5)
    assert set(stats) == {"0", "2", "5"}
    for (name, a), (_, b) in zip(quant_layers(one_pass), quant_layers(oracle), strict=True):
        assert torch.equal(a.weight, b.weight), name
    assert any(s["flipped_vs_nearest"] > 0 for s in stats.values())  # it did learn something
