import itertools
import json
import random

import pandas as pd
import pytest
import torch

from mpqbench.cost import Budget, layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.models import pretrained_model
from mpqbench.policy_bank import (
    build_policy_bank,
    measured_drops,
    predicted_scores,
    rank_correlations,
)
from mpqbench.quant.fold import fold_batchnorm
from mpqbench.quant.policy import default_fixed
from mpqbench.search import solve_ilp, solve_pareto
from mpqbench.sensitivity import SensitivityContext, compute
from mpqbench.synth import SynthConfig, generate, without_real_training_data, zeroq_bn_loss

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return pretrained_model("resnet20", "cifar10", 10, tmp_path_factory.mktemp("ckpt"))


def test_labeled_images_are_classified_as_their_targets(published):
    config = SynthConfig(images=40, batch_size=20, iters=60, lr=0.1)
    data = generate("labeled", published, SHAPE, 10, config, seed=3)
    assert data.x.shape == (40, *SHAPE) and torch.bincount(data.y).tolist() == [4] * 10
    with torch.no_grad():
        agree = (published(data.x).argmax(1) == data.y).float().mean().item()
    assert agree >= 0.9
    again = generate("labeled", published, SHAPE, 10, config, seed=3)
    assert torch.equal(again.x, data.x)  # seeded
    # no BN statistics needed: the BN-free (folded) network works too
    folded = generate("labeled", fold_batchnorm(published), SHAPE, 10,
                      SynthConfig(images=10, batch_size=10, iters=30), seed=0)
    assert folded.loss_history[-1] < folded.loss_history[0]


def test_zeroq_distillation_lowers_the_bn_loss_and_refuses_bn_free_models(published):
    config = SynthConfig(images=16, batch_size=16, iters=40, lr=0.5)
    data = generate("zeroq", published, SHAPE, 10, config, seed=0)
    start = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = zeroq_bn_loss(published, start).item()
        after = zeroq_bn_loss(published, data.x).item()
    assert after < 0.5 * before
    assert data.loss_history[-1] < data.loss_history[0]
    with pytest.raises(MpqbenchError,
                       match="zeroq generator matches BatchNorm.*no BatchNorm2d layer.*'labeled'"):
        generate("zeroq", fold_batchnorm(published), SHAPE, 10, config)
    with pytest.raises(MpqbenchError, match="unknown synth settings"):
        SynthConfig.from_dict({"steps": 3})


def _context(model, bits, batches):
    folded = fold_batchnorm(model)
    layers = layer_costs(folded, SHAPE)
    searchable = [ly.name for ly in layers if ly.name not in default_fixed(layers)]
    return SensitivityContext(folded, searchable, bits, 8, batches, "minmax"), layers


def test_task_loss_at_32_bits_is_zero_and_grows_as_bits_fall(published, cifar_splits):
    batches = [next(cifar_splits.train.batches(64))]
    ctx, _ = _context(published, [2, 4, 32], batches)
    for others in ("fp", "low"):
        frame = compute("task_loss", ctx, others=others).frame
        assert (frame[frame.w_bits == 32].score == 0).all()
        per_layer = frame.pivot(index="layer", columns="w_bits", values="score")
        assert (per_layer[2] > per_layer[32]).mean() > 0.9
    kl = compute("zeroq_kl", ctx).frame
    assert (kl[kl.w_bits == 32].score.abs() < 1e-9).all() and (kl.score >= -1e-9).all()
    with pytest.raises(MpqbenchError, match="others='some'"):
        compute("task_loss", ctx, others="some")


def test_ilp_and_pareto_pick_the_same_policy_on_a_real_table(published, cifar_splits):
    ctx, layers = _context(published, [2, 3, 4, 6, 8], [next(cifar_splits.train.batches(32))])
    table = compute("zeroq_kl", ctx).frame
    fixed = default_fixed(layers)
    for ratio in (7, 8, 10.67):
        ilp = solve_ilp(table, layers, Budget(compression_ratio=ratio), fixed)
        dp = solve_pareto(table, layers, Budget(compression_ratio=ratio), fixed)
        assert dp.bits == ilp.bits
        assert dp.objective == pytest.approx(ilp.objective, rel=1e-9)


def test_the_data_free_path_cannot_read_real_images(cifar_splits):
    free = without_real_training_data(cifar_splits)
    with pytest.raises(MpqbenchError, match="real train split"):
        free.train.batches(10)
    with pytest.raises(MpqbenchError, match="real val split"):
        len(free.val)
    assert len(free.test) == len(cifar_splits.test)


def _kendall_brute_force(a, b):
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        s = (a[i] - a[j]) * (b[i] - b[j])
        concordant += s > 0
        discordant += s < 0
    return (concordant - discordant) / (concordant + discordant)


def test_rank_correlations_against_brute_force():
    rng = random.Random(0)
    a = [rng.random() for _ in range(30)]
    b = [x + rng.gauss(0, 0.3) for x in a]
    result = rank_correlations(pd.Series(a), pd.Series(b))
    assert result["kendall"] == pytest.approx(_kendall_brute_force(a, b))
    rank_a, rank_b = pd.Series(a).rank(), pd.Series(b).rank()
    n = len(a)
    spearman = 1 - 6 * ((rank_a - rank_b) ** 2).sum() / (n * (n * n - 1))
    assert result["spearman"] == pytest.approx(spearman)
    assert rank_correlations(pd.Series(a), pd.Series(a))["spearman"] == pytest.approx(1.0)


def test_policy_bank_resumes_to_the_same_result(published, cifar_splits, tmp_path):
    settings = {"profile": "smoke", "seed": 0, "fix_first_last": True,
                "ptq": {"calib_images": 32, "batch_size": 32},
                "policy_bank": {"count": 3, "budget": {"compression_ratio": 8},
                                "bits": [3, 4, 6, 8], "a_bits": 8, "val_images": 100}}
    out = tmp_path / "bank.json"
    bank = build_policy_bank(published, cifar_splits, "resnet20", settings, "cpu", out)
    assert len(bank["entries"]) == 3 and json.loads(out.read_text())["model"] == "resnet20"
    layers = layer_costs(published, SHAPE)
    for entry in bank["entries"]:
        bits = {k: tuple(v) for k, v in entry["bits"].items()}
        ratio = 32 * sum(ly.params for ly in layers) / sum(ly.params * bits[ly.name][0]
                                                            for ly in layers)
        assert ratio >= 8 - 1e-9
    # an interruption after two policies: the rerun finishes the third, same as before
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps({"config": bank["config"], "model": "resnet20",
                                   "entries": bank["entries"][:2]}))
    resumed = build_policy_bank(published, cifar_splits, "resnet20", settings, "cpu", out)
    assert resumed["entries"] == bank["entries"] and not partial.exists()
    table = pd.DataFrame([(ly.name, b, 8, float(b)) for ly in layers for b in (3, 4, 6, 8)],
                         columns=["layer", "w_bits", "a_bits", "score"])
    sums = predicted_scores(table[~table.layer.isin(["conv1", "linear"])], bank)
    assert sums.tolist() == [sum(v[0] for k, v in e["bits"].items()
                                 if k not in ("conv1", "linear")) for e in bank["entries"]]
    assert len(measured_drops(bank)) == 3


def test_zeroq_statistics_term_is_per_image_as_the_authors_code():
    """An independent loop over images: each image's channel mean and std (unbiased, eps in
    the root) against the targets, squared distances summed, averaged over the images."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 4, generator=g) * 2 + 1
    mean, std = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.5, 3.0])
    expected = 0.0
    for image in x:
        for c in range(3):
            pixels = image[c].flatten()
            m = pixels.sum() / pixels.numel()
            s = (((pixels - m) ** 2).sum() / (pixels.numel() - 1) + 1e-5).sqrt()
            expected += (m - mean[c]) ** 2 + (s - std[c]) ** 2
    from mpqbench.synth import statistics_loss

    assert statistics_loss(x, mean, std, 1e-5).item() == pytest.approx(expected.item() / 5,
                                                                        rel=1e-5)


def test_soft_targets_and_jitter():
    from mpqbench.synth import jitter_and_flip, soft_targets

    t = soft_targets(torch.tensor([2, 0]), 4, 0.7)
    assert torch.allclose(t, torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]))
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    assert torch.equal(jitter_and_flip(x, 0, torch.Generator()), x)
    moved = [jitter_and_flip(x, 2, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(m, x) for m in moved)
    for m in moved:  # a permutation of the pixels of each image: nothing lost or invented
        assert torch.equal(m.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    again = jitter_and_flip(x, 2, torch.Generator().manual_seed(3))
    assert torch.equal(again, moved[3])


@pytest.mark.parametrize("name", ["labeled", "labeled_bn", "zeroq"])
def test_generators_leave_the_model_as_they_found_it(published, name):
    """requires_grad and train/eval state are restored: a frozen layer stays frozen."""
    model = published
    model.train()
    model.conv1.weight.requires_grad_(False)
    try:
        config = SynthConfig(images=4, batch_size=4, iters=2, bn=0.1, jitter=1,
                             soft_target=0.7)
        generate(name, model, SHAPE, 10, config, seed=0)
        assert model.training
        assert not model.conv1.weight.requires_grad
        assert all(p.requires_grad for n, p in model.named_parameters() if n != "conv1.weight")
    finally:
        model.conv1.weight.requires_grad_(True)
        model.eval()


def test_labeled_bn_needs_a_bn_weight_and_soft_target_is_checked(published):
    with pytest.raises(MpqbenchError, match="needs synth bn > 0"):
        generate("labeled_bn", published, SHAPE, 10, SynthConfig(images=2, batch_size=2,
                                                                  iters=1))
    with pytest.raises(MpqbenchError, match="soft_target must be in"):
        SynthConfig.from_dict({"soft_target": 1.5})
