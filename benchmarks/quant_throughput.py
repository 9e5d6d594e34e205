"""Evaluation throughput of fake-quantized ResNet-20 over the FP model, in the same run.

Prints figures (no assertions). The FP model and each quantized model evaluate the same test
images through the real loader; passes alternate (FP, W8A8, W4A8 static, W4A4 LSQ, FP, ...)
so that drifts of the machine hit every model alike, and the median of the repeats is kept.
Target (issue 20): quantized / FP >= 0.85. Writes results/benchmarks/quant_throughput.json.

    python benchmarks/quant_throughput.py [--images 5000] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import resnet20_and_cifar, write_figures
from mpqbench.cost import layer_costs
from mpqbench.evaluate import evaluate
from mpqbench.ptq import PtqConfig, run_ptq
from mpqbench.quant.modules import quantize_model
from mpqbench.quant.policy import default_fixed
from mpqbench.runtime import resolve_device
from mpqbench.search import uniform_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model, splits, source = resnet20_and_cifar()
    model = model.to(device).eval()
    layers = layer_costs(model, splits.input_shape)
    fixed = default_fixed(layers)
    config = PtqConfig(calib_images=256)
    models = {"FP": model}
    for w, a in ((8, 8), (4, 8)):
        models[f"W{w}A{a} static (PTQ)"] = run_ptq(
            model, uniform_bits(layers, w, a, fixed), splits.train, splits.input_shape,
            "nearest", config, device).model
    lsq = quantize_model(model, uniform_bits(layers, 4, 4, fixed), splits.input_shape,
                         weight_quantizer="lsq", input_quantizer="lsq")
    lsq(next(splits.train.batches(64))[0].to(device))  # initializes the activation steps
    models["W4A4 LSQ (QAT)"] = lsq

    rates: dict[str, list[float]] = {name: [] for name in models}
    top1: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, m in models.items():
            result = evaluate(m, splits.test, args.batch_size, device, args.images, desc=name)
            rates[name].append(result.images_per_s)
            top1[name] = result.top1
    fp = statistics.median(rates["FP"])
    print(f"ResNet-20 ({source}), {args.images} test images, batch {args.batch_size}, "
          f"{device}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'model':24s} {'images/s':>9s} {'ratio to FP':>12s} {'top-1':>7s}")
    rows = []
    for name in models:
        rate = statistics.median(rates[name])
        print(f"{name:24s} {rate:9.0f} {rate / fp:12.2f} {top1[name]:7.2f}")
        rows.append({"model": name, "images/s": round(rate), "ratio to FP": round(rate / fp, 3),
                     "top-1": round(top1[name], 2)})
    write_figures("quant_throughput", "Evaluation throughput of fake-quantized ResNet-20", rows,
                  {"checkpoint": source, "test images": args.images, "batch": args.batch_size,
                   "device": str(device), "repeats (median)": args.repeats},
                  ["Target (issue 20): quantized / FP >= 0.85. Static weights are quantized "
                   "once and cached during evaluation; activations go through vectorized "
                   "in-place passes, bit-identical to torch's fused fake-quant (static) and to "
                   "the LSQ reference (learned steps): the top-1 column is unchanged.",
                   "glibc keeps freed blocks up to 32 MiB (mpqbench.malloc, as in the "
                   "pipeline): before, each 32 MB activation was page-faulted in again and "
                   "system time was 39 s of this benchmark's 122 s of CPU; after, 1 s. The "
                   "ratios move by about 0.05 between runs: on 2026-11-27, without it, 0.82 "
                   "to 0.97 over three runs (FP 1,344 to 2,001 images/s); with it, 0.90 / "
                   "0.91 / 0.85, 0.96 / 0.94 / 0.87 and 0.98 / 0.95 / 0.89 before this run "
                   "(W8A8 / W4A8 / LSQ)."])


if __name__ == "__main__":
    main()
