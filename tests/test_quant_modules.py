import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.cost import layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.models import build_model
from mpqbench.quant.fold import conv_bn_pairs, fold_batchnorm
from mpqbench.quant.modules import (
    LsqQuantizer,
    QuantConv2d,
    QuantLinear,
    StaticQuantizer,
    input_scheme,
    model_bits,
    quantize_model,
    set_input_quantizer_mode,
)
from mpqbench.quant.policy import Policy, default_fixed, fixed_layers
from mpqbench.search import uniform_bits

SHAPE = (3, 32, 32)


def _resnet20_with_random_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet20", 10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_default_fixed_layers_are_the_first_conv_and_last_linear():
    layers = layer_costs(build_model("resnet20", 10), SHAPE)
    assert default_fixed(layers) == {"conv1": (8, 8), "linear": (8, 8)}
    mobilenet = layer_costs(build_model("mobilenet_v2", 10), (3, 32, 32))
    assert default_fixed(mobilenet, 6, 6) == {"features.0.0": (6, 6), "classifier.1": (6, 6)}


def test_policy_puts_quantizers_on_every_layer_and_keeps_names():
    model = build_model("resnet20", 10).eval()
    layers = layer_costs(model, SHAPE)
    bits = uniform_bits(layers, 4, 6, default_fixed(layers))
    qmodel = quantize_model(model, Policy.from_bits(bits, "test"), SHAPE)
    assert isinstance(qmodel.conv1, QuantConv2d) and isinstance(qmodel.linear, QuantLinear)
    assert isinstance(qmodel.conv1, nn.Conv2d)  # the cost model still sees the layer
    assert layer_costs(qmodel, SHAPE) == layers
    got = model_bits(qmodel)
    assert got.pop("conv1") == (8, 32)  # the image input stays unquantized
    assert got == {name: b for name, b in bits.items() if name != "conv1"}
    assert set(model.state_dict()) <= set(qmodel.state_dict())
    assert not any(isinstance(m, QuantConv2d) for m in model.modules())  # the FP model untouched


def test_fp_bits_leave_the_model_unchanged():
    model = _resnet20_with_random_bn()
    layers = layer_costs(model, SHAPE)
    qmodel = quantize_model(model, uniform_bits(layers, 32, 32), SHAPE)
    x = torch.randn(4, *SHAPE)
    assert torch.equal(qmodel(x), model(x))


def test_quant_conv_equals_conv_of_independently_quantized_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    qmodel = quantize_model(model, {"0": (8, 8), "2": (4, 3), "4": (5, 6)}, (3, 8, 8))
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        set_input_quantizer_mode(qmodel, "observe")
        qmodel(x)
        set_input_quantizer_mode(qmodel, "on")
        out = qmodel(x)
        # the oracle: torch's own fake quantizers with min-max ranges. Calibration observes
        # every input at once, so the ranges come from a pass with quantized weights and
        # full-precision activations.
        def qw(layer, bits):
            w = layer.weight
            half = 2 ** (bits - 1)
            scale = w.abs().flatten(1).amax(dim=1) / (half - 1)
            zeros = torch.zeros(w.shape[0], dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zeros, 0, -half, half - 1)

        def qa(t, ref, bits):
            lo, hi = min(ref.min().item(), 0.0), max(ref.max().item(), 0.0)
            scale = (hi - lo) / (2**bits - 1)
            zero = int(min(max(-round(lo / scale), 0), 2**bits - 1))
            return torch.fake_quantize_per_tensor_affine(t, scale, zero, 0, 2**bits - 1)

        h = F.relu(F.conv2d(x, qw(model[0], 8), model[0].bias, padding=1))
        h2_ref = F.conv2d(h, qw(model[2], 4), model[2].bias).flatten(1)
        h2 = F.conv2d(qa(h, h, 3), qw(model[2], 4), model[2].bias).flatten(1)
        expected = F.linear(qa(h2, h2_ref, 6), qw(model[4], 5), model[4].bias)
    assert torch.allclose(out, expected, atol=1e-5)
    assert qmodel[0].input_quantizer is None  # fed by the image


def test_bad_policies_are_refused_with_the_layer_named():
    model = build_model("resnet20", 10)
    layers = layer_costs(model, SHAPE)
    bits = uniform_bits(layers, 4, 8)
    with pytest.raises(MpqbenchError, match=r"\['layer9.conv'\] are not quantizable"):
        quantize_model(model, {**bits, "layer9.conv": (4, 8)}, SHAPE)
    del bits["linear"]
    with pytest.raises(MpqbenchError, match=r"no bits for layers \['linear'\]"):
        quantize_model(model, bits, SHAPE)
    with pytest.raises(MpqbenchError, match="unknown quantizer 'pact'"):
        quantize_model(model, uniform_bits(layers, 4, 8), SHAPE, weight_quantizer="pact")
    qmodel = quantize_model(model, uniform_bits(layers, 4, 8), SHAPE)
    with pytest.raises(MpqbenchError, match="layer1.0.conv1 was never calibrated"):
        set_input_quantizer_mode(qmodel, "on")
    # a misspelled option is an error naming what both factories take, not silently dropped
    with pytest.raises(MpqbenchError, match=r"unknown quantizer options \['lsq_per_chanel'\] "
                                            r"for lsq weights and static inputs; allowed: "
                                            r"\['input_observer', 'lsq_per_channel'"):
        quantize_model(model, uniform_bits(layers, 4, 8), SHAPE, "lsq", "static",
                       lsq_per_chanel=False)
    # an option of either factory is accepted (each factory ignores the other's)
    quantize_model(model, uniform_bits(layers, 4, 8), SHAPE, "lsq", "static",
                   lsq_per_channel=False, input_observer="mse")


def test_lsq_model_trains_its_steps():
    model = build_model("resnet20", 10).eval()
    layers = layer_costs(model, SHAPE)
    qmodel = quantize_model(model, uniform_bits(layers, 4, 4, default_fixed(layers)), SHAPE,
                            weight_quantizer="lsq", input_quantizer="lsq")
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    F.cross_entropy(qmodel(x), y).backward()
    conv = qmodel.layer2[0].conv1
    assert isinstance(conv.weight_quantizer, LsqQuantizer)
    assert conv.weight_quantizer.step.shape == (32,) and conv.weight_quantizer.step.grad is not None
    assert conv.input_quantizer.step.grad.abs().item() > 0
    assert bool(conv.input_quantizer.initialized)
    multi = quantize_model(model, uniform_bits(layers, 4, 4), SHAPE, weight_quantizer="multi_lsq",
                           input_quantizer="multi_lsq", candidates=[2, 4, 8])
    assert multi.layer1[0].conv1.weight_quantizer.candidates == [2, 4, 8]
    assert multi.layer1[0].conv1.w_bits == 4


@pytest.mark.parametrize("name,shape", [("resnet20", (3, 32, 32)), ("resnet18", (3, 64, 64)),
                                        ("mobilenet_v2", (3, 64, 64))])
def test_bn_folding_keeps_the_function_and_removes_every_bn(name, shape):
    torch.manual_seed(1)
    model = build_model(name, 10).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(conv_bn_pairs(model)) == n_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_fold_formula_on_one_conv():
    conv, bn = nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    bn.weight.data.copy_(torch.tensor([2.0, 1.0, 1.0]))
    bn.bias.data.copy_(torch.tensor([0.0, 1.0, -1.0]))
    bn.eps = 0.0
    w = conv.weight.detach().clone()
    folded = fold_batchnorm(nn.Sequential(conv, bn))
    k = torch.tensor([1.0, 1.0, 2.0])  # gamma / sqrt(var)
    assert torch.allclose(folded[0].weight, w * k.reshape(3, 1, 1, 1))
    assert torch.allclose(folded[0].bias, torch.tensor([-1.0, -1.0, -7.0]))
    assert isinstance(folded[1], nn.Identity)


def test_static_quantizer_modes():
    quantizer = StaticQuantizer(input_scheme(2))
    x = torch.tensor([0.0, 1.0, 2.9, 3.0])
    assert torch.equal(quantizer(x), x)  # off
    quantizer.start_observing()
    assert torch.equal(quantizer(x), x)
    quantizer.finish_observing()
    assert torch.allclose(quantizer(x), torch.tensor([0.0, 1.0, 3.0, 3.0]))


def test_fixed_layers_follow_the_setting():
    layers = layer_costs(build_model("resnet20", 10), SHAPE)
    assert fixed_layers(layers, {}) == {"conv1": (8, 8), "linear": (8, 8)}
    assert fixed_layers(layers, {"fix_first_last": False}) == {}
    assert uniform_bits(layers, 4, 4, fixed_layers(layers, {"fix_first_last": False}))[
        "conv1"] == (4, 4)


def _uncached_logits(qmodel: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference: every weight quantized again in this forward (autograd on, no cache)."""
    with torch.enable_grad():
        return qmodel(x).detach()


@pytest.mark.parametrize("quantizer", ["static", "lsq", "multi_lsq"])
def test_cached_weights_give_bit_identical_outputs_and_follow_every_change(quantizer):
    model = _resnet20_with_random_bn()
    layers = layer_costs(model, SHAPE)
    options = {"candidates": [2, 4, 8]} if quantizer == "multi_lsq" else {}
    qmodel = quantize_model(fold_batchnorm(model), uniform_bits(layers, 4, 8), SHAPE,
                            weight_quantizer=quantizer, input_quantizer="static", **options)
    x = torch.randn(16, *SHAPE)
    set_input_quantizer_mode(qmodel, "observe")
    with torch.no_grad():
        qmodel(x)
    set_input_quantizer_mode(qmodel, "on")
    if quantizer == "static":
        for _, module in qmodel.named_modules():
            if isinstance(module, (QuantConv2d, QuantLinear)):
                module.weight_quantizer.calibrate_now(module.weight.detach())
    with torch.no_grad():
        first = qmodel(x)
        again = qmodel(x)  # from the cache
    assert torch.equal(first, _uncached_logits(qmodel, x)) and torch.equal(again, first)
    conv = qmodel.layer2[0].conv1
    assert conv._cache_value is not None  # the cache was used
    with torch.no_grad():  # an in-place change of one weight, as an optimizer or AdaRound makes
        conv.weight.mul_(1.5)
        changed = qmodel(x)
    assert not torch.equal(changed, first) and torch.equal(changed, _uncached_logits(qmodel, x))
    with torch.no_grad():  # a change of the quantizer's own state
        if quantizer == "static":
            conv.weight_quantizer.set_qparams(conv.weight_quantizer.scale * 2,
                                              conv.weight_quantizer.zero_point)
        elif quantizer == "lsq":
            conv.weight_quantizer.step.mul_(2)
        else:
            conv.weight_quantizer.set_bits(2)
        moved = qmodel(x)
    assert not torch.equal(moved, changed) and torch.equal(moved, _uncached_logits(qmodel, x))


@pytest.mark.parametrize("quantizer", ["static", "lsq", "multi_lsq"])
def test_quantizers_are_made_on_the_device_of_the_model(quantizer):
    """A model already on an accelerator is calibrated there (run_ptq) before any later
    .to(device): every quantizer tensor must start on the layer's device. The meta device
    stands in for a GPU here; a buffer left on the CPU would be found."""
    model = build_model("resnet20", 10).eval().to("meta")
    layers = layer_costs(build_model("resnet20", 10), SHAPE)
    options = {"candidates": [2, 4]} if quantizer == "multi_lsq" else {}
    qmodel = quantize_model(model, uniform_bits(layers, 4, 4), SHAPE, quantizer, quantizer,
                            **options)
    tensors = dict(qmodel.named_parameters()) | dict(qmodel.named_buffers())
    assert any("quantizer" in name for name in tensors)
    assert {name: t.device.type for name, t in tensors.items()
            if t.device.type != "meta"} == {}
