import pytest
import torch
import torch.nn as nn

from mpqbench.data import TensorSplit
from mpqbench.finetune import FinetuneConfig, finetune


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (96, 8, 8, 3), generator=g, dtype=torch.uint8)
    return TensorSplit(images, torch.arange(96) % 3, (0.5,) * 3, (0.25,) * 3)


def test_interrupted_finetune_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = FinetuneConfig(epochs=3, batch_size=16, lr_max=0.05, seed=2)
    straight = _tiny()
    history = finetune(straight, _data(), config)
    assert [h["epoch"] for h in history] == [1, 2, 3]

    # saving resume states does not change the result, and a finished run leaves none
    with_saves = _tiny()
    finetune(with_saves, _data(), config, resume_path=tmp_path / "full.resume")
    assert not (tmp_path / "full.resume").exists()

    # a run killed two steps into epoch 2, then restarted, ends where the straight run ends
    interrupted = _tiny()
    short = tmp_path / "short.resume"

    class Stop(Exception):
        pass

    calls = {"n": 0}
    orig_step = torch.optim.SGD.step

    def step_then_stop(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 6 * 1 + 2:  # 6 batches an epoch: die two steps into epoch 2
            raise Stop
        return orig_step(self, *a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", step_then_stop)
        with pytest.raises(Stop):
            finetune(interrupted, _data(), config, resume_path=short)
    assert torch.load(short, weights_only=True)["done"] == 6  # saved at the end of epoch 1
    resumed = _tiny()
    history_resumed = finetune(resumed, _data(), config, resume_path=short)
    assert [h["epoch"] for h in history_resumed] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.state_dict().values(), with_saves.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_finetune_lowers_the_training_loss_and_zero_epochs_is_a_no_op():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert finetune(model, _data(), FinetuneConfig(epochs=0)) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    split = TensorSplit(torch.zeros(96, 8, 8, 3, dtype=torch.uint8), torch.zeros(96,
                        dtype=torch.long), (0.5,) * 3, (0.25,) * 3)
    history = finetune(model, split, FinetuneConfig(epochs=3, batch_size=32, lr_max=0.2))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
