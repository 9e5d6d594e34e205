"""Per-sample squared gradients on ResNet-20: ``torch.func`` vmap against a loop of
single-image backward passes, the same images, in the same run.

Prints figures (no assertions): images per second of each way and their ratio, and the
largest relative difference of the per-layer results (they must agree).

    python -m benchmarks.per_sample_gradients [--images 256]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import resnet20_and_cifar, write_figures
from mpqbench.cost import quantizable_layers
from mpqbench.quant.fold import fold_batchnorm
from mpqbench.sensitivity.gradients import per_sample_gradient_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    model, splits, source = resnet20_and_cifar()
    model = fold_batchnorm(model)
    layers = [name for name, _ in quantizable_layers(model)]
    x, y = next(splits.train.batches(args.images))
    results = {}
    for chunk in (16, 64):
        start = time.perf_counter()
        stats = per_sample_gradient_stats(model, layers, [(x, y)], chunk=chunk)
        results[f"vmap, chunks of {chunk}"] = (time.perf_counter() - start, stats.sq_norm)
    start = time.perf_counter()
    loop = dict.fromkeys(layers, 0.0)
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name in layers:
            loop[name] += model.get_submodule(name).weight.grad.pow(2).sum().item() / len(x)
    results["loop of single backward"] = (time.perf_counter() - start, loop)
    loop_s = results["loop of single backward"][0]
    print(f"ResNet-20 ({source}), {len(x)} images, {torch.get_num_threads()} threads")
    print(f"{'way':26s} {'seconds':>8s} {'images/s':>9s} {'speed-up':>9s} {'max rel diff':>13s}")
    rows = []
    for way, (seconds, sq) in results.items():
        diff = max(abs(sq[n] - loop[n]) / abs(loop[n]) for n in layers)
        print(f"{way:26s} {seconds:8.2f} {len(x) / seconds:9.1f} {loop_s / seconds:9.2f} "
              f"{diff:13.2e}")
        rows.append({"way": way, "seconds": round(seconds, 2),
                     "images/s": round(len(x) / seconds, 1),
                     "speed-up": round(loop_s / seconds, 2), "max rel diff": float(f"{diff:.2e}")})
    write_figures("per_sample_gradients", "Per-sample gradient norms (Fisher / FIT metrics)",
                  rows, {"images": len(x), "checkpoint": source})


if __name__ == "__main__":
    main()
