"""Wall time of the PTQ protocol for each rounding, on a profile's PTQ settings.

Prints figures (no assertions): seconds of each step (fold and quantize, rounding,
activation calibration) for ResNet-20 at W4A8, and the test top-1 it reaches.

    python benchmarks/ptq_wall_time.py [--profile quick] [--images 10000]
"""

from __future__ import annotations

import argparse

from benchmarks.common import resnet20_and_cifar, write_figures
from mpqbench.config import load_params, profile_settings
from mpqbench.cost import layer_costs
from mpqbench.evaluate import evaluate
from mpqbench.ptq import ROUNDINGS, PtqConfig, run_ptq
from mpqbench.quant.policy import default_fixed
from mpqbench.runtime import resolve_device
from mpqbench.search import uniform_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    settings = profile_settings(args.profile, load_params())
    config = PtqConfig.from_dict(settings["ptq"])
    device = resolve_device(args.device)
    model, splits, source = resnet20_and_cifar()
    layers = layer_costs(model, splits.input_shape)
    bits = uniform_bits(layers, 4, 8, default_fixed(layers))
    fp = evaluate(model, splits.test, 500, device, args.images).top1
    print(f"ResNet-20 ({source}) W4A8, profile {args.profile}: {config.calib_images} "
          f"calibration images, AdaRound {config.adaround_iters} steps a layer; {device}")
    print(f"{'rounding':10s} {'fold+quant s':>12s} {'rounding s':>11s} {'calib s':>8s} "
          f"{'total s':>8s} {'top-1':>7s} {'FP top-1':>8s}")
    rows = []
    for rounding in ROUNDINGS.names():
        result = run_ptq(model, bits, splits.train, splits.input_shape, rounding, config,
                         device, settings["seed"])
        top1 = evaluate(result.model, splits.test, 500, device, args.images).top1
        s = result.seconds
        print(f"{rounding:10s} {s['fold_quantize_s']:12.2f} {s['rounding_s']:11.2f} "
              f"{s['calibrate_s']:8.2f} {s['total_s']:8.2f} {top1:7.2f} {fp:8.2f}")
        rows.append({"rounding": rounding, "fold+quantize s": round(s["fold_quantize_s"], 2),
                     "rounding s": round(s["rounding_s"], 2),
                     "calibrate s": round(s["calibrate_s"], 2),
                     "total s": round(s["total_s"], 2), "top-1": round(top1, 2),
                     "FP top-1": round(fp, 2)})
    write_figures("ptq_wall_time", "PTQ wall time, ResNet-20 W4A8", rows,
                  {"profile": args.profile, "calibration images": config.calib_images,
                   "AdaRound steps a layer": config.adaround_iters, "test images": args.images,
                   "device": str(device), "checkpoint": source})


if __name__ == "__main__":
    main()
