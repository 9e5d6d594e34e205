"""Run under torchrun by tests/test_distributed.py: QAT-SAQ and LIMPQ's joint indicator
training on a tiny model, each rank saving its final weights."""

import sys

import torch
import torch.nn as nn

from mpqbench import distributed
from mpqbench.data import TensorSplit
from mpqbench.qat import run_qat
from mpqbench.quant.multibit import multibit_model
from mpqbench.train import JointIndicatorStep, QatConfig, qat_train


def fp_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def main(out: str) -> None:
    rank, world = distributed.init()
    g = torch.Generator().manual_seed(1)
    data = TensorSplit(torch.randint(0, 256, (64, 8, 8, 3), generator=g, dtype=torch.uint8),
                       torch.arange(64) % 3, (0.5,) * 3, (0.25,) * 3)
    config = QatConfig(epochs=2, batch_size=16, lr=0.05, seed=3)
    bits = {"0": (8, 8), "3": (3, 3), "8": (8, 8)}
    saq = run_qat("qat_saq", fp_model(), bits, data, (3, 8, 8), config,
                  step_options={"rho": 0.2, "every": 2})
    torch.save(saq.model.state_dict(), f"{out}/saq-rank{rank}.pt")
    model = multibit_model(fp_model(), (3, 8, 8), ["3"], [2, 3, 4])
    qat_train(model, data, config, JointIndicatorStep(["3"], [2, 3, 4], seed=3))
    torch.save(model.state_dict(), f"{out}/limpq-rank{rank}.pt")
    print(f"rank {rank} of {world} done")


if __name__ == "__main__":
    main(sys.argv[1])
