"""AdaRound's wall time against depth: ResNet-20, 32 and 56 on CIFAR-10 images.

One forward pass of the quantized model, with the FP model producing each layer's target in a
second thread (``ptq.round_adaround``), against the layer-by-layer way that re-runs both models
from the input up to every layer (quadratic in depth; the suite's way before issue 19). Same
images, steps and seed; prints seconds, seconds per layer and the ratio, and writes
results/benchmarks/adaround_depth.json. Asserts nothing.

    python -m benchmarks.adaround_depth [--images 256] [--iters 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import write_figures
from mpqbench.cost import layer_costs
from mpqbench.data import load_splits
from mpqbench.models import build_model
from mpqbench.ptq import ROUNDINGS, PtqConfig, adaround_layer
from mpqbench.quant.fold import fold_batchnorm
from mpqbench.quant.modules import quant_layers, quantize_model
from mpqbench.quant.policy import default_fixed
from mpqbench.search import uniform_bits

DEPTHS = ("resnet20", "resnet32", "resnet56")


def layer_by_layer(qmodel, fp_model, images, config, seed) -> None:
    """The quadratic way: before each layer, both models run from the input up to it."""
    generator = torch.Generator().manual_seed(seed)
    for name, module in quant_layers(qmodel):
        captured = {}
        hooks = [module.register_forward_pre_hook(
                     lambda m, i, c=captured: c.__setitem__("input", i[0].detach())),
                 fp_model.get_submodule(name).register_forward_hook(
                     lambda m, i, o, c=captured: c.__setitem__("target", o.detach()))]
        with torch.no_grad():
            qmodel(images)
            fp_model(images)
        for hook in hooks:
            hook.remove()
        with torch.enable_grad():
            adaround_layer(module, captured["input"], captured["target"], config, generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20, help="AdaRound steps a layer")
    args = parser.parse_args()
    splits = load_splits("cifar10", "data", 5000, 0)
    images = torch.cat([x for x, _ in splits.train.batches(args.images)][:1])
    config = PtqConfig(adaround_iters=args.iters, adaround_batch_size=32)
    rows = []
    print(f"{args.images} images, {args.iters} AdaRound steps a layer, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':9s} {'layers':>6s} {'one pass s':>10s} {'s/layer':>8s} "
          f"{'layer by layer s':>16s} {'s/layer':>8s} {'ratio':>6s}")
    for name in DEPTHS:
        torch.manual_seed(0)
        fp = fold_batchnorm(build_model(name, 10).eval())
        layers = layer_costs(fp, splits.input_shape)
        bits = uniform_bits(layers, 4, 8, default_fixed(layers))
        seconds = {}
        for way in ("one pass", "layer by layer"):
            qmodel = quantize_model(fp, bits, splits.input_shape)
            start = time.perf_counter()
            if way == "one pass":
                ROUNDINGS.get("adaround")(qmodel, fp, [images], config, 0)
            else:
                layer_by_layer(qmodel, fp, images, config, 0)
            seconds[way] = time.perf_counter() - start
        n = len(layers)
        one, old = seconds["one pass"], seconds["layer by layer"]
        print(f"{name:9s} {n:6d} {one:10.2f} {one / n:8.3f} {old:16.2f} {old / n:8.3f} "
              f"{old / one:6.2f}")
        rows.append({"model": name, "layers": n, "one pass s": round(one, 2),
                     "one pass s / layer": round(one / n, 3), "layer by layer s": round(old, 2),
                     "layer by layer s / layer": round(old / n, 3),
                     "speed-up": round(old / one, 2)})
    write_figures("adaround_depth", "AdaRound wall time against depth (W4A8)", rows,
                  {"images": args.images, "AdaRound steps a layer": args.iters},
                  ["Linear in depth: the one-pass seconds per layer stay flat from 20 to 56 "
                   "layers; the layer-by-layer way grows with depth."])


if __name__ == "__main__":
    main()
