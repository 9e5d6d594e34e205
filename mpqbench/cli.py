"""``python -m mpqbench``: the entry points the DVC stages call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mpqbench.config import load_yaml
from mpqbench.errors import MpqbenchError


def _parameter(pairs: list[list[str]] | None) -> dict[str, Any]:
    """``-p key value`` pairs; values are read as YAML scalars (``3`` -> int, ``true`` -> bool)."""
    return {key: load_yaml(value) for key, value in (pairs or [])}


def cmd_data(args: argparse.Namespace) -> None:
    from mpqbench.config import load_params
    from mpqbench.data import prepare_dataset

    image_root = args.image_root
    if image_root is None and Path(args.params).is_file():
        image_root = load_params(args.params).get("imagenet_root")
    meta = prepare_dataset(args.dataset, args.out, args.raw, image_root)
    print(f"{meta.dataset} ({meta.variant}): {meta.counts} images written to {args.out}")


def _checked_params(path: str) -> dict[str, Any]:
    """params.yaml, after every key, type and name in it is checked (before any compute)."""
    from mpqbench.config import load_params
    from mpqbench.params_schema import check_params

    params = load_params(path)
    check_params(params, Path(path).parent)
    return params


def cmd_check_params(args: argparse.Namespace) -> None:
    params = _checked_params(args.params)
    if args.out:  # the params stage's output: the same bytes whenever the check passes
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("params.yaml passed mpqbench.params_schema.check_params\n")
    print(f"{args.params}: every key, type and name checked (profile {params['profile']!r})")


def cmd_checkpoint(args: argparse.Namespace) -> None:
    from mpqbench.checkpoints import make_fp_checkpoint
    from mpqbench.config import profile_settings

    settings = profile_settings(args.profile, _checked_params(args.params))
    out = args.out or f"checkpoints/{args.model}.pt"
    metrics = args.metrics or f"results/metrics/checkpoint-{args.model}.json"
    result = make_fp_checkpoint(args.model, settings, out, metrics, args.data_dir)
    print(f"{args.model} on {result['dataset_variant']}: published "
          f"{result['published_test_top1']:.2f}% -> adapted {result['test_top1']:.2f}% "
          f"test top-1; saved {out}")


def cmd_policy_bank(args: argparse.Namespace) -> None:
    from mpqbench.baseline import load_context
    from mpqbench.config import profile_settings
    from mpqbench.policy_bank import build_policy_bank

    _known_model(args.model)
    settings = profile_settings(args.profile, _checked_params(args.params))
    model, _, splits, device = load_context(args.model, settings)
    out = args.out or f"results/policy_bank/{args.model}.json"
    bank = build_policy_bank(model, splits, args.model, settings, device, out)
    drops = [e["drop"] for e in bank["entries"]]
    print(f"{len(drops)} random policies of {args.model}: validation drop "
          f"{min(drops):.2f} to {max(drops):.2f} points; saved {out}")


def _known_model(name: str) -> None:
    """An unknown model name is an error naming the known ones, before any file is looked up
    (it used to surface as a missing checkpoint)."""
    from mpqbench.models import MODELS

    MODELS.get(name)


def _distributed_context(args: argparse.Namespace):
    """(settings, FP model, splits, device, layers) for a torchrun-able entry point."""
    import os

    import torch

    from mpqbench import distributed
    from mpqbench.baseline import load_context
    from mpqbench.config import profile_settings
    from mpqbench.cost import layer_costs

    _known_model(args.model)
    distributed.init()
    settings = profile_settings(args.profile, _checked_params(args.params))
    model, _, splits, device = load_context(args.model, settings)
    if device.type == "cuda":  # one GPU a process under torchrun
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return settings, model, splits, device, layer_costs(model, splits.input_shape)


def cmd_qat(args: argparse.Namespace) -> None:
    import torch

    from mpqbench import distributed
    from mpqbench.cost import parse_wa
    from mpqbench.evaluate import evaluate
    from mpqbench.qat import qat_config, run_qat
    from mpqbench.quant.policy import fixed_layers, load_policy
    from mpqbench.search import uniform_bits

    settings, model, splits, device, layers = _distributed_context(args)
    fixed = fixed_layers(layers, settings)
    if args.policy:
        bits = load_policy(args.policy, [layer.name for layer in layers]).bits()
    else:
        w, a = parse_wa(args.bits)
        bits = uniform_bits(layers, w, a, fixed)
    options = ({"rho": args.rho, "case": args.case, "every": args.every,
                "perturb_space": args.perturb_space}
               if args.protocol == "qat_saq" else None)
    result = run_qat(args.protocol, model, bits, splits.train, splits.input_shape,
                     qat_config(settings), device, options, resume_path=f"{args.out}.resume",
                     frozen=fixed)
    if distributed.is_main():
        eval_cfg = settings["eval"]
        test = evaluate(result.model, splits.test, eval_cfg["batch_size"], device,
                        eval_cfg.get("max_images"), desc="test")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": result.model.state_dict(), "bits": bits, "top1": test.top1,
                    "history": result.history, "world_size": distributed.rank_and_world()[1]},
                   args.out)
        print(f"{args.protocol} {args.model}: test top-1 {test.top1:.2f}% after "
              f"{result.seconds:.1f} s of training; saved {args.out}")


def cmd_limpq_indicators(args: argparse.Namespace) -> None:
    from mpqbench import distributed
    from mpqbench.limpq import indicator_config, indicators, repair, train_indicators
    from mpqbench.quant.policy import fixed_layers

    settings, model, splits, device, layers = _distributed_context(args)
    config = indicator_config(settings)
    fixed = fixed_layers(layers, settings)
    searchable = [layer.name for layer in layers if layer.name not in fixed]
    trained = train_indicators(model, splits.train, splits.input_shape, searchable,
                               settings["method_cfg"]["limpq"]["candidates"], config, device,
                               f"{args.out}.resume")
    if distributed.is_main():
        frame = repair(indicators(trained.model, searchable))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"LIMPQ indicators of {args.model} ({len(frame)} rows, "
              f"{int((~frame.usable).sum())} repaired) after {trained.seconds:.1f} s; "
              f"saved {args.out}")


def cmd_notebook(args: argparse.Namespace) -> None:
    from mpqbench.notebook import run_notebook

    parameters = _parameter(args.parameter)
    params_file = str(parameters.get("params_file", "params.yaml"))
    if Path(params_file).is_file():
        _checked_params(params_file)
    path = run_notebook(args.source, args.out, parameters, args.runs)
    print(f"executed {args.source} -> {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from mpqbench.report import write_summary

    df = write_summary(args.runs, args.out)
    print(f"{len(df)} RunRecords summarized in {Path(args.out) / 'summary.csv'}")


def cmd_overlay(args: argparse.Namespace) -> None:
    from mpqbench.overlay import apply_overlay

    changed = apply_overlay(args.params, args.overlay, args.set)
    print(f"{args.params}: {len(changed)} keys set from {args.overlay}"
          + "".join(f"\n  {key}" for key in changed)
          + "\nrun `dvc repro` (or `dvc exp run`); `git checkout params.yaml` goes back")


def cmd_list(args: argparse.Namespace) -> None:
    from mpqbench.config import load_params
    from mpqbench.data import DATASETS
    from mpqbench.models import MODELS
    from mpqbench.ptq import ROUNDINGS
    from mpqbench.quant.modules import QUANTIZERS
    from mpqbench.quant.observers import OBSERVERS
    from mpqbench.search import SOLVERS
    from mpqbench.sensitivity import METRICS

    for kind, registry in (("models", MODELS), ("datasets", DATASETS), ("metrics", METRICS),
                           ("solvers", SOLVERS), ("quantizers", QUANTIZERS),
                           ("observers", OBSERVERS), ("roundings", ROUNDINGS)):
        print(f"{kind + ':':12s}", ", ".join(registry.names()))
    if Path(args.params).is_file():
        params = load_params(args.params)
        print(f"{'profiles:':12s}", ", ".join(sorted(params["profiles"])))
        print(f"{'runs:':12s}", ", ".join(params.get("runs", {})))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpqbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="prepare a dataset cache (mirror or download)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--out", required=True, help="cache folder, e.g. data/cifar10")
    p.add_argument("--raw", default=None, help="where downloads go (default: <out>/../raw)")
    p.add_argument("--image-root", default=None,
                   help="an image-folder dataset's root (default: imagenet_root of --params)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("check-params", help="check every key, type and name of params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default=None, help="a file written when the check passes (DVC)")
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("checkpoint", help="adapt the published FP model to the dataset variant")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=None)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("notebook", help="execute a notebook with papermill and render it")
    p.add_argument("source", help="notebooks/<name>.py (jupytext) or .ipynb")
    p.add_argument("--out", required=True, help="folder for the executed .ipynb and .html")
    p.add_argument("--runs", default=None, help="folder the notebook must write RunRecords to")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"))
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("report", help="summarize every RunRecord")
    p.add_argument("--runs", default="results/runs")
    p.add_argument("--out", default="results")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("policy-bank",
                       help="random policies at one budget with measured validation drops")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default=None, help="default: results/policy_bank/<model>.json")
    p.set_defaults(func=cmd_policy_bank)

    p = sub.add_parser("qat", help="QAT of one policy (qat_lsq | qat_saq); torchrun-able")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--protocol", default="qat_lsq", help="qat_lsq or qat_saq")
    p.add_argument("--bits", default="W4A4", help="uniform W{w}A{a} (first/last at W8A8)")
    p.add_argument("--policy", default=None, help="a Policy JSON instead of --bits")
    p.add_argument("--rho", type=float, default=0.4)
    p.add_argument("--case", type=int, default=3)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--perturb-space", default="weight_standardized",
                   choices=["weight_standardized", "raw"],
                   help="qat_saq: the units of rho (default: %(default)s, the authors')")
    p.add_argument("--out", required=True, help="where to save the trained model (.pt)")
    p.set_defaults(func=cmd_qat)

    p = sub.add_parser("limpq-indicators",
                       help="LIMPQ's joint indicator training; torchrun-able; writes a CSV")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="indicator table (.csv)")
    p.set_defaults(func=cmd_limpq_indicators)

    p = sub.add_parser("overlay", help="switch params.yaml to another suite, e.g. "
                                       "configs/imagenet.yaml (comments kept)")
    p.add_argument("overlay", help="the overlay file, e.g. configs/imagenet.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a dotted key and a YAML value, after the overlay "
                        "(e.g. imagenet_root=/data/imagenet)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_overlay)

    p = sub.add_parser(
        "list", help="registered models, datasets, metrics, solvers, ...; profiles and runs")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MpqbenchError as exc:
        print(f"mpqbench: error: {exc}", file=sys.stderr)
        return 2
    return 0
