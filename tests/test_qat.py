"""QAT loop, the SAQ step (against a hand-written computation) and the QAT protocols."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mpqbench.data import TensorSplit
from mpqbench.errors import MpqbenchError
from mpqbench.qat import qat_model, run_qat
from mpqbench.quant.modules import LsqQuantizer, quant_layers
from mpqbench.quant.quantizers import QuantScheme, lsq_gradient_scale, lsq_quantize_fused
from mpqbench.train import PlainStep, QatConfig, SaqStep, qat_parameter_groups, qat_train

BITS = {"0": (4, 4), "3": (4, 4)}


def _tiny_quantized(seed: int = 0) -> nn.Module:
    """Linear -> ReLU -> BN1d -> Linear, both linears LSQ W4A4 (the first sees the input
    unquantized, as the image-fed layer does)."""
    torch.manual_seed(seed)
    fp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3))
    return qat_model(fp, BITS, (5,)).train()


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)


class Recorder(torch.optim.Optimizer):
    """An optimizer that changes nothing and records the parameters and gradients it sees."""

    def __init__(self, named):
        self.named = list(named)
        super().__init__([p for _, p in self.named], {})
        self.seen = []

    def step(self, closure=None):
        self.seen.append({n: (p.detach().clone(), None if p.grad is None else p.grad.clone())
                          for n, p in self.named})


def _hand_saq(model: nn.Module, x, y, rho: float, standardized: bool, with_steps: bool):
    """SAQ (case 3) written out: the parameter gradients the optimizer must receive.
    ``standardized``: the weight ascent in units of w / sigma (sigma: per-output-row std);
    ``with_steps``: the quantizer steps are perturbed too."""
    first, bn, last = model[0], model[2], model[3]
    w1, w2 = first.weight.detach(), last.weight.detach()
    names = ["b1", "b2", "gamma", "beta", "s_w1", "s_w2", "s_a2"]
    vals = {"b1": first.bias, "b2": last.bias, "gamma": bn.weight, "beta": bn.bias,
            "s_w1": first.weight_quantizer.step, "s_w2": last.weight_quantizer.step,
            "s_a2": last.input_quantizer.step}
    vals = {k: v.detach().clone() for k, v in vals.items()}

    # the LSQ primitive the quantizers use (tests/test_fast_quant.py holds it to the composed
    # form and tests/test_lsq_observers.py to eq. 3): this test is about SAQ's two passes, and
    # a last-bit difference in a step's gradient moves pass 2's rounding of a few weights
    lsq_quantize = lsq_quantize_fused

    def forward(p, lat1, lat2, d1, d2):
        def qw(w, s):  # per-tensor signed 4-bit LSQ on |step|
            return lsq_quantize(w, s.abs(), -8, 7, None, lsq_gradient_scale(w.numel(), 7))
        h = F.linear(x, qw(lat1, p["s_w1"]) + d1, p["b1"])
        h = F.batch_norm(F.relu(h), None, None, p["gamma"], p["beta"], training=True)
        h = lsq_quantize(h, p["s_a2"].abs(), 0, 15, None,
                         lsq_gradient_scale(h.numel(), 15))
        return F.cross_entropy(F.linear(h, qw(lat2, p["s_w2"]) + d2, p["b2"]), y)

    # pass 1 at Q(w): gradients with respect to the quantized weights and the others
    p = {k: v.clone().requires_grad_() for k, v in vals.items()}
    d1 = torch.zeros_like(w1, requires_grad=True)
    d2 = torch.zeros_like(w2, requires_grad=True)
    grads = list(torch.autograd.grad(forward(p, w1, w2, d1, d2),
                                     [d1, d2] + [p[n] for n in names]))
    sigmas = [w.std(dim=1, keepdim=True) if standardized else torch.ones(())
              for w in (w1, w2)]
    grads[0], grads[1] = grads[0] * sigmas[0], grads[1] * sigmas[1]
    perturbed = [g for g, n in zip(grads, ["w1", "w2"] + names, strict=True)
                 if with_steps or not n.startswith("s_")]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in perturbed)).float()
    eps = [rho * g / (norm + 1e-12) for g in grads]
    eps[0], eps[1] = eps[0] * sigmas[0], eps[1] * sigmas[1]
    if not with_steps:
        eps = [torch.zeros_like(e) if n.startswith("s_") else e
               for e, n in zip(eps, ["w1", "w2"] + names, strict=True)]
    # pass 2: eps added after quantization (weights) and to the others; gradient to latent w
    p2 = {n: (vals[n] + e).requires_grad_() for n, e in zip(names, eps[2:], strict=True)}
    lat1, lat2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    grads2 = torch.autograd.grad(forward(p2, lat1, lat2, eps[0], eps[1]),
                                 [lat1, lat2] + [p2[n] for n in names])
    return dict(zip(["w1", "w2"] + names, grads2, strict=True))


@pytest.mark.parametrize("space,with_steps", [("raw", True), ("weight_standardized", False),
                                              ("weight_standardized", True)])
def test_one_saq_step_equals_the_hand_written_computation(space, with_steps):
    model = _tiny_quantized()
    x, y = _batch()
    model(x)  # initializes the activation step, as the first training forward would
    expected = _hand_saq(model, x, y, rho=0.3, standardized=space != "raw",
                         with_steps=with_steps)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = SaqStep(rho=0.3, case=3, perturb_space=space, perturb_steps=with_steps)
    step.setup(model)
    opt = Recorder(model.named_parameters())
    step(model, x, y, opt, nn.CrossEntropyLoss())
    (seen,) = opt.seen
    key = {"w1": "0.weight", "w2": "3.weight", "b1": "0.bias", "b2": "3.bias",
           "gamma": "2.weight", "beta": "2.bias", "s_w1": "0.weight_quantizer.step",
           "s_w2": "3.weight_quantizer.step", "s_a2": "3.input_quantizer.step"}
    for hand, name in key.items():
        torch.testing.assert_close(seen[name][1], expected[hand], rtol=1e-5, atol=1e-7,
                                   msg=f"gradient of {name}")
        # every parameter is back at its value when the optimizer steps (bit for bit)
        assert torch.equal(seen[name][0], before[name]), name
    # the gradient differs from plain QAT's: the perturbation matters
    plain = _tiny_quantized()
    plain(x)
    rec = Recorder(plain.named_parameters())
    PlainStep()(plain, x, y, rec, nn.CrossEntropyLoss())
    assert not torch.allclose(rec.seen[0]["3.weight"][1], seen["3.weight"][1], atol=1e-6)


@pytest.mark.parametrize("case", [1, 2, 3])
def test_every_case_restores_all_but_the_latent_weights_bit_for_bit(case):
    model = _tiny_quantized()
    x, y = _batch()
    model(x)
    state = copy.deepcopy(model.state_dict())
    # BN statistics after one plain forward on the batch: what the step must leave
    reference = copy.deepcopy(model)
    reference(x)
    step = SaqStep(rho=0.5, case=case, perturb_steps=True, bn_stats="first")
    step.setup(model)
    opt = Recorder(model.named_parameters())
    step(model, x, y, opt, nn.CrossEntropyLoss())
    for name, (value, grad) in opt.seen[0].items():
        assert torch.equal(value, state[name]), name
        assert grad is not None and torch.isfinite(grad).all(), name
    for key in ("2.running_mean", "2.running_var", "2.num_batches_tracked"):
        assert torch.equal(model.state_dict()[key], reference.state_dict()[key]), key
    assert all(m.weight_delta is None for _, m in quant_layers(model))


def test_authors_bn_statistics_move_in_both_passes():
    """bn_stats='both' (the authors): the second, perturbed pass updates the running
    statistics too, so they differ from one plain forward's and count two batches."""
    model = _tiny_quantized()
    x, y = _batch()
    model(x)
    reference = copy.deepcopy(model)
    reference(x)
    step = SaqStep(rho=0.5)
    step.setup(model)
    step(model, x, y, Recorder(model.named_parameters()), nn.CrossEntropyLoss())
    tracked = model.state_dict()["2.num_batches_tracked"]
    assert tracked == reference.state_dict()["2.num_batches_tracked"] + 1
    assert not torch.equal(model.state_dict()["2.running_mean"],
                           reference.state_dict()["2.running_mean"])


def test_case_2_with_a_sub_boundary_perturbation_keeps_the_quantized_weights():
    model = _tiny_quantized()
    x, y = _batch()
    model(x)
    layers = [m for _, m in quant_layers(model)]
    for m in layers:  # fixed steps: only the latent weights move the rounding
        m.weight_quantizer.step.requires_grad_(False)
    # the smallest distance of any weight (in units of its step) to a rounding boundary
    distance = min(
        ((m.weight / m.weight_quantizer.effective_step()).frac().abs() - 0.5).abs().min()
        * m.weight_quantizer.effective_step() for m in layers).item()
    step = SaqStep(rho=0.5 * distance, case=2)  # every |eps_i| <= ||eps|| = rho < distance
    step.setup(model)
    quantized_before = [m.quantized_weight().detach().clone() for m in layers]
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, _: seen.append(mod.quantized_weight().detach().clone())) for m in layers]
    step(model, x, y, Recorder(model.named_parameters()), nn.CrossEntropyLoss())
    for h in hooks:
        h.remove()
    # passes 1 and 2: the latent weights moved in pass 2, their quantized values did not
    assert len(seen) == 4
    assert max(e.abs().max().item() for e in step.eps_weights.values()) > 0
    for q, s1, s2 in zip(quantized_before, seen[:2], seen[2:], strict=True):
        assert torch.equal(q, s1) and torch.equal(q, s2)
    # with case 3 the same perturbation does change what the second pass sees
    step3 = SaqStep(rho=0.5 * distance, case=3)
    step3.setup(model)
    seen.clear()
    hooks = [m.register_forward_pre_hook(
        lambda mod, _: seen.append(mod.quantized_weight().detach().clone())) for m in layers]
    step3(model, x, y, Recorder(model.named_parameters()), nn.CrossEntropyLoss())
    for h in hooks:
        h.remove()
    assert not torch.equal(seen[0], seen[2])


def test_rho_zero_is_plain_qat_exactly():
    torch.manual_seed(3)
    plain, saq = _tiny_quantized(), _tiny_quantized()
    for model, step in ((plain, PlainStep()), (saq, SaqStep(rho=0.0, bn_stats="first"))):
        step.setup(model)
        opt = torch.optim.SGD(qat_parameter_groups(model, 1e-4), lr=0.05, momentum=0.9,
                              nesterov=True)
        for i in range(4):
            x, y = _batch(10 + i)
            step(model, x, y, opt, nn.CrossEntropyLoss())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, saq.state_dict()[key]), key


def test_efficiency_schedule_reuses_the_last_perturbation():
    x, y = _batch()
    counts = {}
    for label, kwargs in (("every1", {}), ("every3", {"every": 3}),
                          ("p", {"probability": 0.5, "seed": 4})):
        model = _tiny_quantized()
        step = SaqStep(rho=0.2, **kwargs)
        step.setup(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        flags = [step(model, x, y, opt, nn.CrossEntropyLoss())["refreshed"] for _ in range(6)]
        counts[label] = (step.forward_passes, flags)
    assert counts["every1"] == (12, [1.0] * 6)
    assert counts["every3"] == (8, [1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    passes, flags = counts["p"]
    assert flags[0] == 1.0 and passes == 6 + sum(flags) and 0 < sum(flags[1:]) < 5
    with pytest.raises(MpqbenchError, match="case"):
        SaqStep(case=4)
    with pytest.raises(MpqbenchError, match="rho"):
        SaqStep(rho=-1)


def _conv_data():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 8, 8, 3), generator=g, dtype=torch.uint8)
    return TensorSplit(images, torch.arange(64) % 3, (0.5,) * 3, (0.25,) * 3)


def _conv_fp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


class Interrupt(Exception):
    pass


def test_interrupted_qat_resumes_to_the_same_weights(tmp_path):
    bits = {"0": (8, 8), "3": (3, 3), "8": (8, 8)}
    config = QatConfig(epochs=2, batch_size=16, lr=0.05, checkpoint_every=3, seed=5)
    straight = run_qat("qat_saq", _conv_fp(), bits, _conv_data(), (3, 8, 8), config,
                       step_options={"rho": 0.3, "every": 2})
    assert len(straight.history["steps"]) == 8

    model = qat_model(_conv_fp(), bits, (3, 8, 8))
    step = SaqStep(rho=0.3, every=2, seed=5)
    calls = {"n": 0}
    original = SaqStep.__call__

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Interrupt
        return original(self, *args, **kwargs)

    SaqStep.__call__ = flaky
    try:
        with pytest.raises(Interrupt):
            qat_train(model, _conv_data(), config, step, resume_path=tmp_path / "r.pt")
    finally:
        SaqStep.__call__ = original
    assert (tmp_path / "r.pt").is_file()  # the state after step 3 (checkpoint_every=3)
    resumed_model = qat_model(_conv_fp(), bits, (3, 8, 8))
    resumed_step = SaqStep(rho=0.3, every=2, seed=5)
    history = qat_train(resumed_model, _conv_data(), config, resumed_step,
                        resume_path=tmp_path / "r.pt")
    assert [s["step"] for s in history["steps"]] == list(range(1, 9))
    assert resumed_step.forward_passes == straight.step.forward_passes == 12  # 8 steps, 4 fresh
    assert not (tmp_path / "r.pt").exists()  # a finished run leaves no state to go stale
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_qat_lsq_learns_on_a_separable_problem():
    """Plain LSQ QAT at W3A3 lowers the training loss of a learnable task."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    images = (labels.view(-1, 1, 1, 1) * 100 + torch.randint(0, 40, (96, 8, 8, 3),
                                                             generator=g)).to(torch.uint8)
    data = TensorSplit(images, labels, (0.5,) * 3, (0.25,) * 3)
    result = run_qat("qat_lsq", _conv_fp(), {"0": (8, 8), "3": (3, 3), "8": (8, 8)}, data,
                     (3, 8, 8), QatConfig(epochs=15, batch_size=32, lr=0.1, seed=0))
    losses = [e["train_loss"] for e in result.history["epochs"]]
    assert losses[-1] < 0.5 * losses[0]
    assert result.model[3].w_bits == 3 and result.model[3].a_bits == 3
    with pytest.raises(MpqbenchError, match="unknown QAT protocol"):
        run_qat("qat_magic", _conv_fp(), {"0": (8, 8)}, data, (3, 8, 8), QatConfig(epochs=1))


def test_bad_settings_and_options_are_refused_with_the_fix():
    with pytest.raises(MpqbenchError, match="need 'epochs'"):
        QatConfig.from_dict({"lr": 0.1}, seed=0)
    with pytest.raises(MpqbenchError, match="lr must be a number"):
        QatConfig.from_dict({"epochs": 1, "lr": "fast"}, seed=0)
    with pytest.raises(MpqbenchError, match="unknown QAT settings"):
        QatConfig.from_dict({"epochs": 1, "lrr": 0.1}, seed=0)
    bits = {"0": (8, 8), "3": (3, 3), "8": (8, 8)}
    with pytest.raises(MpqbenchError, match="bad step options"):
        run_qat("qat_saq", _conv_fp(), bits, _conv_data(), (3, 8, 8), QatConfig(epochs=1),
                step_options={"rh0": 0.1})
    with pytest.raises(MpqbenchError, match="bad step options"):
        run_qat("qat_lsq", _conv_fp(), bits, _conv_data(), (3, 8, 8), QatConfig(epochs=1),
                step_options={"rho": 0.1})
    empty = _conv_data().subset(torch.tensor([], dtype=torch.long))
    with pytest.raises(MpqbenchError, match="empty"):
        run_qat("qat_lsq", _conv_fp(), bits, empty, (3, 8, 8), QatConfig(epochs=1))


def test_loss_curve_keeps_at_most_the_asked_points_and_the_first_step():
    from mpqbench.qat import loss_curve

    history = {"steps": [{"step": i + 1, "loss": 1.0 / (i + 1)} for i in range(1234)]}
    curve = loss_curve(history, max_points=500)
    assert len(curve) == 412 and curve[0]["step"] == 1 and curve[1]["step"] == 4
    short = loss_curve({"steps": history["steps"][:10]})
    assert [c["step"] for c in short] == list(range(1, 11)) and short[2]["loss"] == 0.33333


def _classifier_step(step_range, positive):
    """An 8-bit per-tensor weight quantizer on classifier-like weights (64 x 10), its step
    at the 0.013 that ResNet-20's classifier starts from."""
    torch.manual_seed(4)
    w = torch.randn(10, 64) * 0.5
    q = LsqQuantizer(QuantScheme(8, signed=True, symmetric=True), step_range=step_range,
                     positive=positive)
    q.init_from(w)
    with torch.no_grad():
        q.step.fill_(0.013)
    return q, w


def _sgd_on_step(q, w, steps, lr=0.01):
    """SGD (momentum 0.9) on the step alone, for a loss that wants Q(w) to reproduce w."""
    opt = torch.optim.SGD([q.step], lr=lr, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(q(w), w, reduction="sum").backward()
        opt.step()
    return q.step.grad


def test_a_step_pushed_below_zero_dies_under_a_forward_clamp_but_not_as_abs():
    """The collapse of issue 14: an SGD step overshoots the 8-bit classifier step through zero
    (0.013 - 0.015). Under the old forward clamp [1e-5, 1] the step then gets no gradient and
    never comes back, however long the loss asks for it; as |s| it keeps a live gradient and
    recovers to the step the loss wants."""
    results = {}
    for name, step_range in (("clamp", (1e-5, 1.0)), ("abs", None)):
        q, w = _classifier_step(step_range, name)
        with torch.no_grad():
            q.step.sub_(0.015)  # the overshoot
        assert q.at_bound() == (name == "clamp")  # dead_steps reports the clamped one
        grad = _sgd_on_step(q, w, steps=30)
        results[name] = (q.step.detach().abs().item(), grad.abs().item())
    assert results["clamp"][1] == 0.0 and results["clamp"][0] == pytest.approx(0.002)
    assert results["abs"][1] > 0.0 and results["abs"][0] > 0.005


def test_qat_stops_with_an_error_when_a_step_dies_or_the_loss_is_not_finite():
    data = _conv_data()
    bits = {"0": (8, 8), "3": (3, 3), "8": (8, 8)}
    fp = _conv_fp()

    class Killer(PlainStep):  # an update that drives layer 3's weight step to zero
        def __call__(self, model, x, y, optimizer, criterion, clip_value=None):
            out = super().__call__(model, x, y, optimizer, criterion, clip_value)
            with torch.no_grad():
                model.get_submodule("3").weight_quantizer.step.zero_()
            return out

    model = qat_model(fp, bits, (3, 8, 8))
    with pytest.raises(MpqbenchError, match=r"step 1: learned quantizer steps at a bound.*"
                                            r"3\.weight_quantizer"):
        qat_train(model, data, QatConfig(epochs=1, batch_size=8), Killer())

    class NanLoss(PlainStep):
        def __call__(self, model, x, y, optimizer, criterion, clip_value=None):
            return {"loss": float("nan")}

    with pytest.raises(MpqbenchError, match="loss is not finite"):
        qat_train(qat_model(fp, bits, (3, 8, 8)), data, QatConfig(epochs=1, batch_size=8),
                  NanLoss())


def test_fixed_layers_keep_their_calibrated_steps_frozen():
    bits = {"0": (8, 8), "3": (3, 3), "8": (8, 8)}
    result = run_qat("qat_lsq", _conv_fp(), bits, _conv_data(), (3, 8, 8),
                     QatConfig(epochs=1, batch_size=8, lr=0.05), frozen=["0", "8"])
    start = qat_model(_conv_fp(), bits, (3, 8, 8), frozen=["0", "8"])
    for name in ("0", "8"):
        trained = result.model.get_submodule(name).weight_quantizer.step
        assert not trained.requires_grad
        assert torch.equal(trained, start.get_submodule(name).weight_quantizer.step)
    searched = result.model.get_submodule("3").weight_quantizer.step
    assert searched.requires_grad
    assert not torch.equal(searched, start.get_submodule("3").weight_quantizer.step)
