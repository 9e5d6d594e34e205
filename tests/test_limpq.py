"""LIMPQ: per-bit BN, the joint step, indicators, the repair and the ILP over (w, a) pairs."""

import random

import pandas as pd
import pytest
import torch
import torch.nn as nn

from mpqbench.cost import Budget, LayerCost, cost_summary, layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.limpq import indicator_table, indicators, repair
from mpqbench.models import build_model
from mpqbench.quant.modules import model_bits
from mpqbench.quant.multibit import MultiBitBatchNorm2d, multibit_model, set_bits
from mpqbench.quant.policy import default_fixed
from mpqbench.search import search
from mpqbench.train import JointIndicatorStep

from .test_search import _brute_force

CANDIDATES = [2, 3, 4]


def _fp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def test_per_bit_bn_keeps_separate_statistics():
    model = multibit_model(_fp(), (3, 8, 8), ["3", "6"], CANDIDATES).train()
    bn = model.get_submodule("4")
    assert isinstance(bn, MultiBitBatchNorm2d) and bn.source == "3"
    assert isinstance(model.get_submodule("1"), nn.BatchNorm2d)  # first conv stays FP
    conv_out = {}
    model.get_submodule("3").register_forward_hook(
        lambda m, i, o: conv_out.__setitem__(m.w_bits, o.detach().mean((0, 2, 3))))
    g = torch.Generator().manual_seed(0)
    low, high = torch.randn(8, 3, 8, 8, generator=g), 4 + 3 * torch.randn(8, 3, 8, 8, generator=g)
    start = bn.per_bits["2"].running_mean.clone()
    set_bits(model, {"3": 2, "6": 2})
    model(low)
    set_bits(model, {"3": 3, "6": 3})
    model(high)
    two, three = bn.per_bits["2"].running_mean, bn.per_bits["3"].running_mean
    # each BN moved by momentum 0.1 towards the mean of the conv output at its own width
    torch.testing.assert_close(two, 0.9 * start + 0.1 * conv_out[2])
    torch.testing.assert_close(three, 0.9 * start + 0.1 * conv_out[3])
    assert (two - three).abs().max() > 1e-3  # different widths, different inputs
    assert torch.equal(bn.per_bits["4"].running_mean, start)  # untouched: never used


def test_one_joint_step_runs_every_width_then_one_mixed_setting_then_one_update():
    model = multibit_model(_fp(), (3, 8, 8), ["3", "6"], CANDIDATES).train()
    seen = []
    model.register_forward_pre_hook(lambda m, _: seen.append(
        (model_bits(m)["3"], model_bits(m)["6"], m.get_submodule("4").bits)))
    steps = []

    class CountingSGD(torch.optim.SGD):
        def step(self, closure=None):
            steps.append(1)
            return super().step(closure)

    opt = CountingSGD(model.parameters(), lr=0.1)
    step = JointIndicatorStep(["3", "6"], CANDIDATES, seed=1)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = step(model, x, y, opt, nn.CrossEntropyLoss(), clip_value=1.0)
    assert len(seen) == len(CANDIDATES) + 1 == step.forward_passes and len(steps) == 1
    assert seen[:3] == [((b, b), (b, b), b) for b in (4, 3, 2)]  # widest first, BN follows
    assert set(losses) == {"loss", "W4A4", "W3A3", "W2A2", "mixed"}
    # gradients accumulated over the passes and clipped by value before the one update
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert max(g.abs().max().item() for g in grads) <= 1.0
    # every width's own steps received gradient (each pass reached its quantizers)
    for b in CANDIDATES:
        assert model.get_submodule("3").weight_quantizer.per_bits[str(b)].step.grad is not None


def test_joint_step_update_is_the_clipped_sum_of_the_pass_gradients():
    """Against a hand-run of the same passes on a copy: one SGD update (lr 1, no momentum)
    moves every parameter by minus the clipped sum of its gradients over the 4 passes."""
    import copy

    model = multibit_model(_fp(), (3, 8, 8), ["3", "6"], CANDIDATES).train()
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    model(x)  # initialize the activation steps at the widest width, as training would
    for b in CANDIDATES:
        set_bits(model, {"3": b, "6": b})
        model(x)
    hand = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = JointIndicatorStep(["3", "6"], CANDIDATES, seed=4)
    mixed = JointIndicatorStep(["3", "6"], CANDIDATES, seed=4).random_setting()
    clip = 0.01  # small enough that some gradient elements are clipped
    step(model, x, y, torch.optim.SGD(model.parameters(), lr=1.0), nn.CrossEntropyLoss(),
         clip_value=clip)
    total = {n: torch.zeros_like(p) for n, p in hand.named_parameters()}
    for setting in [{"3": b, "6": b} for b in (4, 3, 2)] + [mixed]:
        set_bits(hand, setting)
        hand.zero_grad()
        nn.CrossEntropyLoss()(hand(x), y).backward()
        for n, p in hand.named_parameters():
            if p.grad is not None:
                total[n] += p.grad
    clipped = 0
    for n, p in model.named_parameters():
        expected = before[n] - total[n].clamp(-clip, clip)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=n)
        clipped += int((total[n].abs() > clip).sum())
    assert clipped > 0


def test_indicators_start_from_the_sigma_init_and_are_monotone():
    fp = _fp()
    model = multibit_model(fp, (3, 8, 8), ["3", "6"], CANDIDATES)
    frame = indicators(model, ["3", "6"])
    w = fp[3].weight.detach()
    bound = max(abs(w.mean() - 3 * w.std()), abs(w.mean() + 3 * w.std()))
    got = frame[(frame.layer == "3") & (frame.kind == "weight")].set_index("bits")["indicator"]
    for b in CANDIDATES:
        assert got[b] == pytest.approx(float(bound) / 2 ** (b - 1), rel=1e-6)
    assert repair(frame[frame.kind == "weight"])["usable"].all()


def _frame(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"layer": layer, "kind": kind, "bits": b, "indicator": v}
                         for (layer, kind), vs in values.items()
                         for b, v in zip(CANDIDATES, vs, strict=True)])


def test_repair_makes_a_non_monotone_width_unreachable():
    # layer a: the 3-bit weight step is below the 4-bit one (non-monotone) and the cheapest
    values = {("a", "weight"): [0.5, 0.01, 0.2], ("a", "activation"): [0.3, 0.2, 0.1],
              ("b", "weight"): [0.4, 0.2, 0.1], ("b", "activation"): [0.3, 0.2, 0.1]}
    repaired = repair(_frame(values))
    assert repaired.loc[~repaired.usable, ["layer", "kind", "bits"]].values.tolist() == [
        ["a", "weight", 3]]
    layers = [LayerCost("a", "conv", 100, 1000), LayerCost("b", "conv", 100, 1000)]
    budget = Budget(bitops_g=1000 * (4 * 4 + 4 * 4) / 1e9)
    unrepaired = indicator_table(repaired.assign(usable=True)).frame
    assert search("ilp", unrepaired, layers, budget).bits["a"][0] == 3  # it would be picked
    table = indicator_table(repaired).frame
    assert not ((table.layer == "a") & (table.w_bits == 3)).any()
    assert len(table) == 2 * 3 + 3 * 3  # a: 2 weight widths x 3 act widths, b: 3 x 3
    assert search("ilp", table, layers, budget).bits["a"][0] != 3


def test_pair_scores_follow_alpha():
    values = {("a", "weight"): [0.4, 0.2, 0.1], ("a", "activation"): [0.9, 0.5, 0.3]}
    table = indicator_table(_frame(values), alpha=2.0).frame.set_index(["w_bits", "a_bits"])
    assert table.loc[(2, 4), "score"] == pytest.approx(0.3 + 2 * 0.4)
    assert table.loc[(4, 2), "score"] == pytest.approx(0.9 + 2 * 0.1)
    # an image-fed layer (no activation quantizer) gets a_bits 8 and no activation term
    only_w = indicator_table(_frame({("a", "weight"): [0.4, 0.2, 0.1]})).frame
    assert set(only_w.a_bits) == {8} and list(only_w.score) == pytest.approx([0.8, 0.4, 0.2])


def test_pair_ilp_matches_brute_force_with_fixed_8_bit_ends():
    rng = random.Random(0)
    for trial in range(25):
        n = rng.randint(3, 4)
        layers = [LayerCost(f"l{i}", "conv", rng.randint(50, 4000), rng.randint(1000, 90000))
                  for i in range(n)] + [LayerCost("fc", "linear", 640, 640)]
        fixed = {"l0": (8, 8), "fc": (8, 8)}
        values = {}
        for layer in layers[1:-1]:
            for kind in ("weight", "activation"):
                top = rng.uniform(0.05, 0.2)
                values[layer.name, kind] = [top * rng.uniform(1.2, 4) ** (4 - b)
                                            for b in CANDIDATES]
        table = indicator_table(_frame(values)).frame
        budget = [Budget(bitops_equiv=(3, 3)), Budget(compression_ratio=rng.uniform(6, 9)),
                  Budget(bitops_equiv=(3, 3), compression_ratio=rng.uniform(6, 9))][trial % 3]
        try:
            best = _brute_force(layers, table, budget, fixed)
        except MpqbenchError:
            best = None
        if best is None:
            with pytest.raises(MpqbenchError):
                search("ilp", table, layers, budget, fixed)
            continue
        result = search("ilp", table, layers, budget, fixed)
        assert result.objective == pytest.approx(best[0], abs=1e-9), trial
        assert result.bits["l0"] == (8, 8) and result.bits["fc"] == (8, 8)


def test_resnet20_policy_meets_both_budgets_by_the_independent_count():
    model = build_model("resnet20", num_classes=10)
    layers = layer_costs(model, (3, 32, 32))
    fixed = default_fixed(layers)
    searchable = [ly.name for ly in layers if ly.name not in fixed]
    rng = random.Random(1)
    values = {}
    for name in searchable:
        for kind in ("weight", "activation"):
            top = rng.uniform(0.01, 0.1)
            values[name, kind] = [top * 2 ** (4 - b) * rng.uniform(0.9, 1.1) for b in CANDIDATES]
    table = indicator_table(_frame(values)).frame
    result = search("ilp", table, layers, Budget(bitops_equiv=(3, 3), compression_ratio=10.0),
                    fixed)
    # BitOps counted by hand from the MACs: fixed layers at 8x8, the rest at W3A3
    macs = {ly.name: ly.macs for ly in layers}
    w3a3 = sum(macs[n] * (64 if n in fixed else 9) for n in macs)
    summary = cost_summary(layers, result.bits)
    assert summary["bitops_g"] * 1e9 <= w3a3 * (1 + 1e-9)
    assert summary["compression_ratio"] >= 10.0 - 1e-9
    assert {result.bits[n] for n in fixed} == {(8, 8)}
    assert len({result.bits[n] for n in searchable}) > 1  # a mixed policy


def test_indicator_settings_and_records():
    from mpqbench.context import EvalConfig, Profile
    from mpqbench.limpq import indicator_config, indicator_records
    from mpqbench.ptq import PtqConfig

    settings = {"profile": "p", "seed": 3, "qat": {"epochs": 9, "lr": 0.5},
                "method_cfg": {"limpq": {"indicator_training": {"lr": 0.01,
                                                                "grad_clip_value": 1.0}}},
                "limpq_indicators": {"epochs": 2, "max_batches_per_epoch": 7}}

    def profile(settings):
        return Profile("p", 3, "cifar10", "cpu", EvalConfig(100), PtqConfig(), settings)

    config = indicator_config(profile(settings))
    assert (config.epochs, config.lr, config.grad_clip_value, config.max_batches_per_epoch,
            config.seed) == (2, 0.01, 1.0, 7, 3)
    with pytest.raises(MpqbenchError, match="limpq_indicators"):
        indicator_config(profile({k: v for k, v in settings.items() if k != "limpq_indicators"}))
    with pytest.raises(MpqbenchError, match="method_cfg.limpq"):
        indicator_config(profile({**settings, "method_cfg": {}}))
    with pytest.raises(MpqbenchError, match="indicator_training"):
        indicator_config(profile({**settings, "method_cfg": {"limpq": {}}}))
    rows = indicator_records(repair(_frame({("a", "weight"): [0.5, 0.01, 0.2]})))
    assert rows[1] == {"layer": "a", "kind": "weight", "bits": 3, "indicator": 0.01,
                       "usable": False}
