import pytest
import torch

from mpqbench.cost import Budget, cost_summary, layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import evaluate
from mpqbench.models import MODELS, build_model, pretrained_model
from mpqbench.models.cifar_resnet import ZeroPadShortcut
from mpqbench.models.zoo import check_model_dataset, load_published_state
from mpqbench.quant.modules import image_input_layers

# Hand count for ResNet-20 (3 stages x 3 BasicBlocks, widths 16/32/64, 32x32 input):
# weights: stem 3*16*9; stage 1: 6 convs 16*16*9; stage 2: 16*32*9 + 5 * 32*32*9;
# stage 3: 32*64*9 + 5 * 64*64*9; classifier 64*10.
HAND_PARAMS = [432] + [2304] * 6 + [4608] + [9216] * 5 + [18432] + [36864] * 5 + [640]
# MACs: weights x output positions (32*32 in stem and stage 1, 16*16 in stage 2, 8*8 in stage 3).
HAND_MACS = ([432 * 1024] + [2304 * 1024] * 6 + [4608 * 256] + [9216 * 256] * 5
             + [18432 * 64] + [36864 * 64] * 5 + [640])


def test_resnet20_parameters_and_macs_match_the_hand_count():
    model = build_model("resnet20", 10)
    assert sum(p.numel() for p in model.parameters()) == 269_722  # the published 0.27M
    costs = layer_costs(model, (3, 32, 32))
    assert [c.params for c in costs] == HAND_PARAMS
    assert [c.macs for c in costs] == HAND_MACS
    assert costs[0].name == "conv1" and costs[-1].name == "linear" and len(costs) == 20
    assert sum(HAND_MACS) == 40_551_040


def test_cost_summary_of_uniform_bits():
    costs = layer_costs(build_model("resnet20", 10), (3, 32, 32))
    summary = cost_summary(costs, {c.name: (4, 8) for c in costs})
    assert summary["size_mib"] == pytest.approx(268_336 * 4 / 8 / 2**20)
    assert summary["bitops_g"] == pytest.approx(40_551_040 * 32 / 1e9)
    assert summary["compression_ratio"] == pytest.approx(8.0)
    assert (summary["mean_w_bits"], summary["mean_a_bits"]) == (4.0, 8.0)


@pytest.mark.parametrize("depth,blocks", [(32, 5), (44, 7), (56, 9)])
def test_deeper_cifar_resnets_have_6n_plus_2_layers(depth, blocks):
    model = build_model(f"resnet{depth}", 10)
    assert len(layer_costs(model, (3, 32, 32))) == 6 * blocks + 2


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_published_resnet20_accuracy_on_the_data_at_hand(cifar_splits):
    # Published 91.73% on the original CIFAR-10; on the mirror's JPEG re-encoding we measured
    # 81.03% (10,000 test images). Either must be met within 0.5 points.
    expected = {"cifar10": 91.73, "cifar10-jpeg": 81.03}[cifar_splits.variant]
    model = pretrained_model("resnet20", "cifar10", 10)
    result = evaluate(model, cifar_splits.test, batch_size=1000)
    assert result.images == 10_000
    assert abs(result.top1 - expected) <= 0.5, result


def test_unknown_model_and_wrong_dataset_are_refused():
    with pytest.raises(MpqbenchError, match="unknown model 'vgg16'; known: mobilenet_v2"):
        MODELS.get("vgg16")
    with pytest.raises(MpqbenchError, match="not 'cifar10'; pick a model registered for cifar10"):
        check_model_dataset("resnet18", "cifar10")


def test_corrupt_checkpoint_in_the_mirror_is_refused(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet20-12fca82f.th").write_bytes(b"broken")
    monkeypatch.setenv("MPQBENCH_MIRROR", str(tmp_path))
    with pytest.raises(MpqbenchError, match="corrupt: sha256"):
        pretrained_model("resnet20", "cifar10", 10)
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"broken")
    with pytest.raises(MpqbenchError, match="cannot read checkpoint"):
        load_published_state(bad)


def test_checkpoint_download_failure_names_the_mirror(tmp_path, no_mirror, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MpqbenchError, match="No network.*MPQBENCH_MIRROR"):
        pretrained_model("resnet20", "cifar10", 10, download_dir=tmp_path)


def test_imagenet_architectures_build_through_the_registry():
    model = build_model("resnet18", 1000)
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    assert len(layer_costs(build_model("mobilenet_v2", 1000), (3, 224, 224))) == 53


def test_torchvision_weights_refuse_a_folder_with_another_class_count():
    with pytest.raises(MpqbenchError, match="classifies 1000 classes, the dataset has 4"):
        pretrained_model("mobilenet_v2", "imagenet", 4)  # refused before any download


def test_the_image_input_counts_at_8_bits_in_every_bitops_figure():
    """ResNet-18, every layer W4A4 (``fix_first_last: false``): the first conv reads the image,
    which stays unquantized (8-bit by nature), so its BitOps count 4 x 8, not 4 x 4."""
    model = build_model("resnet18", 1000)
    costs = layer_costs(model, (3, 224, 224))
    assert [c.name for c in costs if c.image_input] == ["conv1"]
    assert [c.name for c in costs if c.image_input] == image_input_layers(model, (3, 224, 224))
    conv1 = 64 * 112 * 112 * 3 * 7 * 7  # hand count of the 7x7 stem's MACs
    assert costs[0].macs == conv1
    total = sum(c.macs for c in costs)
    bits = {c.name: (4, 4) for c in costs}
    summary = cost_summary(costs, bits)
    assert summary["bitops_g"] == pytest.approx(((total - conv1) * 16 + conv1 * 32) / 1e9)
    assert round(summary["bitops_g"], 2) == 30.91
    # the W4A4-equivalent budget is that same figure, so uniform W4A4 meets it exactly
    (limit,) = Budget(bitops_equiv=(4, 4)).limits(costs)
    assert limit.bound == pytest.approx(summary["bitops_g"] * 1e9)
    assert limit.total(costs, bits) == limit.bound
