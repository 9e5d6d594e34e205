"""Where a QAT step's time goes on one device: the step alone, with the health check, the loader.

Times, on ResNet-20 W4A4 (first conv and classifier W8A8) with CIFAR-10 batches of 128 already
on the device: an FP training step, a plain LSQ QAT step, the same with
``train.check_health`` after each step (as ``qat_train`` runs it), and SAQ (rho 0.9, as the
grid's ``qat_saq``) with the check; and the loader's cost a batch (augmentation on the CPU).
Then the torch profiler over 5 plain QAT steps with the check: kernel launches, host-device
syncs (``aten::_local_scalar_dense``, one per ``.item()`` / ``bool()`` of a device tensor) and
the device's busy time a step, against the wall time. Prints figures, asserts nothing.

    python -m benchmarks.step_profile --device cuda
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import resnet20_and_cifar, sync, write_figures
from benchmarks.qat_step_cost import FpStep
from mpqbench.cost import layer_costs
from mpqbench.errors import MpqbenchError
from mpqbench.qat import qat_model
from mpqbench.quant.modules import lsq_quantizers
from mpqbench.quant.policy import default_fixed
from mpqbench.runtime import resolve_device
from mpqbench.search import uniform_bits
from mpqbench.train import PlainStep, SaqStep, TrainStep, check_health, qat_parameter_groups

WARMUP, TIMED, PROFILED = 5, 25, 5


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(qat_parameter_groups(model, 1e-4), lr=0.01, momentum=0.9,
                           nesterov=True)


def ms_per_step(model: nn.Module, step: TrainStep, batches: list, device: torch.device,
                health: bool) -> float:
    """Mean milliseconds of a step (and of the health check when ``health``) after warm-up."""
    model.to(device).train()
    step.setup(model)
    optimizer, criterion, quantizers = _optimizer(model), nn.CrossEntropyLoss(), lsq_quantizers(
        model)
    for i, (x, y) in enumerate(batches):
        if i == WARMUP:
            sync(device)
            start = time.perf_counter()
        losses = step(model, x, y, optimizer, criterion)
        if health:
            check_health(model, losses, "profile", None, i, quantizers)
    sync(device)
    return (time.perf_counter() - start) / (len(batches) - WARMUP) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--val-size", type=int, default=5000,
                        help="train images held out (fewer on a small copy of the data)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model, splits, source = resnet20_and_cifar(val_size=args.val_size)
    layers = layer_costs(model, splits.input_shape)
    fixed = default_fixed(layers)
    bits = uniform_bits(layers, 4, 4, fixed)
    start = time.perf_counter()
    cpu_batches = list(itertools.islice(splits.train.batches(128, shuffle=True, augment=True),
                                        WARMUP + TIMED))
    if len(cpu_batches) < WARMUP + TIMED:
        raise MpqbenchError(f"the train split has {len(cpu_batches)} batches of 128, the "
                            f"profile needs {WARMUP + TIMED}: lower --val-size")
    loader_ms = (time.perf_counter() - start) / len(cpu_batches) * 1e3
    batches = [(x.to(device), y.to(device)) for x, y in cpu_batches]

    def quantized() -> nn.Module:
        return qat_model(model, bits, splits.input_shape, fixed)

    measured = {
        "FP training step": ms_per_step(copy.deepcopy(model), FpStep(), batches, device, False),
        "plain QAT step": ms_per_step(quantized(), PlainStep(), batches, device, False),
        "plain QAT step + health check": ms_per_step(quantized(), PlainStep(), batches, device,
                                                     True),
        "SAQ step (rho 0.9) + health check": ms_per_step(quantized(), SaqStep(0.9), batches,
                                                         device, True),
    }
    profiled = quantized()
    ms_per_step(profiled, PlainStep(), batches[:WARMUP + 1], device, True)
    step, optimizer, quantizers = PlainStep(), _optimizer(profiled), lsq_quantizers(profiled)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        for i, (x, y) in enumerate(batches[:PROFILED]):
            losses = step(profiled, x, y, optimizer, nn.CrossEntropyLoss())
            check_health(profiled, losses, "profile", None, i, quantizers)
        sync(device)
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    busy_us = sum(e.self_device_time_total for e in events) if device.type == "cuda" else None

    fp = measured["FP training step"]
    rows = [{"figure": name, "value": round(ms, 2), "unit": "ms", "x FP step": round(ms / fp, 2)}
            for name, ms in measured.items()]
    rows.append({"figure": "loader, a batch (CPU, augmentation)", "value": round(loader_ms, 2),
                 "unit": "ms", "x FP step": ""})
    rows.append({"figure": "kernel launches a step (profiled)", "unit": "count",
                 "value": count.get("cudaLaunchKernel", 0) // PROFILED, "x FP step": ""})
    rows.append({"figure": "host-device syncs a step (profiled)", "unit": "count",
                 "value": count.get("aten::_local_scalar_dense", 0) // PROFILED,
                 "x FP step": ""})
    if busy_us is not None:
        rows.append({"figure": "device busy a step (profiled)", "unit": "ms",
                     "value": round(busy_us / PROFILED / 1e3, 2), "x FP step": ""})
    for row in rows:
        print(f"{row['figure']:40s} {row['value']!s:>8s} {row['unit']:5s} {row['x FP step']!s:>6s}")
    check_ms = measured["plain QAT step + health check"] - measured["plain QAT step"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    write_figures(f"step_profile_{device.type}", f"Where a QAT step's time goes on {name}",
                  rows, {"device": name, "checkpoint": source, "batch": 128,
                         "timed steps after warm-up": [TIMED, WARMUP],
                         "profiled steps": PROFILED},
                  [f"The health check costs {check_ms:.2f} ms a step here: it reads every LSQ "
                   "step's state back to the host, a sync each.",
                   "Syncs: aten::_local_scalar_dense calls (each .item() or bool() of a "
                   "device tensor); launches: cudaLaunchKernel calls (0 on the CPU)."])


if __name__ == "__main__":
    try:
        main()
    except MpqbenchError as exc:
        sys.exit(f"mpqbench: error: {exc}")
