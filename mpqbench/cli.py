"""``python -m mpqbench``: the entry points the DVC stages call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mpqbench.config import load_yaml
from mpqbench.errors import MpqbenchError
from mpqbench.malloc import keep_freed_memory


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
    from mpqbench.preflight import preflight

    params = _checked_params(args.params)
    preflight(params, Path(args.params).parent)
    if args.out:  # the params stage's output: the same bytes whenever the check passes
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("params.yaml passed mpqbench.params_schema.check_params\n")
    print(f"{args.params}: every key, type and name checked (profile {params['profile']!r}); "
          "pinned checkpoints intact; every budget feasible")


def _profile(args: argparse.Namespace) -> str:
    """``--profile``, or params.yaml's ``profile`` when it is not given."""
    if getattr(args, "profile", None):
        return args.profile
    return str(_checked_params(args.params)["profile"])


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from mpqbench.config import profile_settings

    return profile_settings(_profile(args), _checked_params(args.params))


def _read_policy_bits(path: str, layer_names: list[str]) -> dict[str, tuple[int, int]]:
    """Bits from a Policy JSON or from a RunRecord JSON (its ``policy``), checked against the
    model's layers."""
    import json

    from mpqbench.quant.policy import load_policy, validate_policy

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MpqbenchError(f"policy file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MpqbenchError(f"cannot read policy {path} ({exc})") from exc
    if not isinstance(data, dict):
        raise MpqbenchError(f"{path} holds {type(data).__name__}, not a Policy or RunRecord "
                            f"object")
    if "run_id" in data and "policy" in data:
        if not data["policy"]:
            raise MpqbenchError(f"{path}: RunRecord {data['run_id']!r} holds no policy (an FP "
                                f"or uniform reference run?)")
        return validate_policy(data["policy"], layer_names,
                               f"{path} (RunRecord {data['run_id']})").bits()
    return load_policy(path, layer_names).bits()


def _model_bits(args: argparse.Namespace, layers, settings: dict[str, Any]):
    """The bits a command runs: ``--policy`` (Policy or RunRecord JSON) or uniform ``--bits``
    with the profile's fixed first and last layers."""
    from mpqbench.cost import parse_wa
    from mpqbench.quant.policy import check_bits, fixed_layers
    from mpqbench.search import uniform_bits

    if args.policy:
        return _read_policy_bits(args.policy, [layer.name for layer in layers])
    w, a = parse_wa(args.bits)
    check_bits({"every searchable layer": {"w_bits": w, "a_bits": a}}, f"--bits {args.bits}")
    return uniform_bits(layers, w, a, fixed_layers(layers, settings))


def _unweighted_layers(args: argparse.Namespace, settings: dict[str, Any]):
    """The cost model's layers of ``--model`` (built without weights: nothing is loaded)."""
    from mpqbench.cost import layer_costs
    from mpqbench.data import DATASETS
    from mpqbench.models import build_model
    from mpqbench.models.zoo import check_model_dataset

    check_model_dataset(args.model, settings["dataset"])
    spec = DATASETS.get(settings["dataset"])
    return layer_costs(build_model(args.model, spec.num_classes), spec.input_shape)


def cmd_cost(args: argparse.Namespace) -> None:
    import pandas as pd

    from mpqbench.cost import cost_summary

    _known_model(args)
    settings = _settings(args)
    layers = _unweighted_layers(args, settings)
    bits = _model_bits(args, layers, settings)
    summary = cost_summary(layers, bits)
    table = pd.DataFrame([{
        "layer": ly.name, "kind": ly.kind, "params": ly.params, "MACs": ly.macs,
        "w_bits": bits[ly.name][0], "a_bits": bits[ly.name][1],
        "input_bits": ly.input_bits(bits[ly.name][1]),
        "size_KiB": ly.params * bits[ly.name][0] / 8 / 1024,
        "BitOps_M": ly.macs * bits[ly.name][0] * ly.input_bits(bits[ly.name][1]) / 1e6,
    } for ly in layers])
    with pd.option_context("display.max_rows", None, "display.width", 140):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\n{args.model} on {settings['dataset']}: {summary['size_mib']:.4f} MiB weights "
          f"({summary['compression_ratio']:.2f}x smaller than FP32), "
          f"{summary['bitops_g']:.4f} G BitOps, mean bits W {summary['mean_w_bits']:.2f} / "
          f"A {summary['mean_a_bits']:.2f} (an image input counts as 8-bit)")


def cmd_search(args: argparse.Namespace) -> None:
    """The first-order comparison's search, run as its notebook runs it: candidates and metric
    options from the profile (``method_cfg.first_order_ptq`` with ``profiles.<p>.sensitivity``
    on top) unless given here, every input checked before the model, data or metric load."""
    from mpqbench.cost import Budget
    from mpqbench.quant.policy import Policy, check_bits, fixed_layers
    from mpqbench.search import SOLVERS, check_feasible, search
    from mpqbench.sensitivity import METRICS, compute, metric_options

    _known_model(args)
    METRICS.get(args.metric)
    SOLVERS.get(args.solver)
    bad = [pair for pair in args.budget if "=" not in pair]
    if bad:
        raise MpqbenchError(f"--budget {bad[0]!r}: write KEY=VALUE, e.g. compression_ratio=8")
    budget = Budget.from_dict(dict(_parameter([pair.split("=", 1) for pair in args.budget])))
    settings = _settings(args)
    cfg = (settings.get("method_cfg") or {}).get("first_order_ptq") or {}
    try:
        bits_choices = (sorted(int(b) for b in args.w_bits.split(",")) if args.w_bits
                        else sorted(cfg.get("bits") or [2, 3, 4, 5, 6, 8]))
    except ValueError:
        raise MpqbenchError(f"--w-bits {args.w_bits!r}: write integers separated by commas, "
                            f"e.g. 2,3,4,8") from None
    a_bits = args.a_bits if args.a_bits is not None else int(cfg.get("a_bits", 8))
    check_bits({f"candidate W{w}A{a_bits}": {"w_bits": w, "a_bits": a_bits}
                for w in bits_choices}, "--w-bits / --a-bits")
    layers = _unweighted_layers(args, settings)
    # feasibility from the cost model alone, before the model, the data or the metric
    check_feasible(layers, budget, bits_choices, [a_bits], fixed_layers(layers, settings))
    options = metric_options(settings, cfg, args.metric)
    print(f"{args.metric} on profile {_profile(args)!r} with {options or 'its defaults'}; "
          f"W in {bits_choices}, A{a_bits}")
    ctx = _context(args)
    table = compute(args.metric, ctx.sensitivity_context(bits_choices, a_bits), **options)
    result = search(args.solver, table.frame, ctx.layers, budget, ctx.fixed)
    policy = Policy.from_bits(result.bits, "cli-search", budget=budget.describe(),
                              bit_candidates=bits_choices, fixed=sorted(ctx.fixed))
    policy.save(args.out)
    print(f"{args.metric} ({table.seconds:.1f} s) + {result.solver} ({result.seconds:.3f} s, "
          f"{result.status}): " + ", ".join(f"{k} {v:.4g}" for k, v in result.totals.items())
          + f"; saved {args.out}")


def _ptq(args: argparse.Namespace, rounding: str):
    """(context, the PTQ result, bits) for ``ptq`` and ``export``."""
    from mpqbench.ptq import run_ptq

    _known_model(args)
    settings = _settings(args)
    bits = _model_bits(args, _unweighted_layers(args, settings), settings)  # before any load
    ctx = _context(args)
    result = run_ptq(ctx.model, bits, ctx.splits.train, ctx.splits.input_shape, rounding,
                     ctx.profile.ptq, ctx.device, ctx.seed)
    return ctx, result, bits


def cmd_ptq(args: argparse.Namespace) -> None:
    from mpqbench.cost import cost_summary

    ctx, result, bits = _ptq(args, args.rounding)
    test = ctx.evaluate(result.model, desc="test")
    summary = cost_summary(ctx.layers, bits)
    print(f"PTQ {args.rounding} {args.model}: test top-1 {test.top1:.2f}% on {test.images} "
          f"images; {summary['size_mib']:.4f} MiB, {summary['bitops_g']:.4f} G BitOps; "
          f"{result.seconds['total_s']:.1f} s")


def cmd_export(args: argparse.Namespace) -> None:
    from mpqbench.cost import cost_summary
    from mpqbench.evaluate import evaluate
    from mpqbench.export import export_onnx, onnx_top1

    if not args.out.endswith(".onnx"):
        raise MpqbenchError(f"--out {args.out}: name the file NAME.onnx")
    ctx, result, bits = _ptq(args, args.rounding)
    exported = export_onnx(result.model, ctx.splits.input_shape, args.out)
    size = cost_summary(ctx.layers, bits)["size_mib"]
    print(f"saved {exported.path}: {exported.mib_on_disk:.3f} MiB on disk (INT8 weight "
          f"storage) vs {size:.3f} MiB in the cost model; {exported.quantized_weights} "
          f"quantized weights, {exported.quantized_inputs} quantized inputs")
    if args.check_images != 0:
        limit = None if args.check_images < 0 else args.check_images
        fake = evaluate(result.model, ctx.splits.test, 500, ctx.device, limit,
                        desc="fake-quant")
        top1, images = onnx_top1(exported.path, ctx.splits.test, 500, limit)
        print(f"test top-1 on {images} images: onnxruntime {top1:.2f}%, fake-quant "
              f"{fake.top1:.2f}% (difference {top1 - fake.top1:+.2f} points)")


def cmd_checkpoint(args: argparse.Namespace) -> None:
    from mpqbench.checkpoints import make_fp_checkpoint

    settings = _settings(args)
    out = args.out or f"checkpoints/{args.model}.pt"
    metrics = args.metrics or f"results/metrics/checkpoint-{args.model}.json"
    result = make_fp_checkpoint(args.model, settings, out, metrics, args.data_dir)
    print(f"{args.model} on {result['dataset_variant']}: published "
          f"{result['published_test_top1']:.2f}% -> adapted {result['test_top1']:.2f}% "
          f"test top-1; saved {out}")


def cmd_policy_bank(args: argparse.Namespace) -> None:
    from mpqbench.policy_bank import build_policy_bank
    from mpqbench.preflight import preflight
    from mpqbench.stage_guard import guarded_outputs, watch_parent

    preflight(_checked_params(args.params), Path(args.params).parent)
    ctx = _context(args)
    out = args.out or f"results/policy_bank/{args.model}.json"
    watch_parent()
    with guarded_outputs([out]):  # a failed run leaves the committed bank in place
        bank = build_policy_bank(ctx.model, ctx.splits, args.model, ctx.settings, ctx.device,
                                 out)
    drops = [e["drop"] for e in bank["entries"]]
    print(f"{len(drops)} random policies of {args.model}: validation drop "
          f"{min(drops):.2f} to {max(drops):.2f} points; saved {out}")


def _known_model(args: argparse.Namespace) -> None:
    """An unknown ``--model`` is an error naming the known ones (the shipped models and
    params.yaml's ``user_models``, registered by the params check), before any file is looked
    up (it used to surface as a missing checkpoint)."""
    from mpqbench.models import MODELS

    if Path(args.params).is_file():
        _checked_params(args.params)  # registers the user's models
    MODELS.get(args.model)


def _context(args: argparse.Namespace):
    """The run context of ``--model`` under ``--profile`` (``context.build_context``): the
    params check first, then the model and data; the FP model is not evaluated."""
    from mpqbench.context import build_context

    _known_model(args)
    return build_context(args.model, _profile(args), args.params, evaluate_fp=False)


def _distributed_context(args: argparse.Namespace):
    """The run context of a torchrun-able entry point: one GPU a process under torchrun."""
    import os
    from dataclasses import replace

    import torch

    from mpqbench import distributed

    distributed.init()
    ctx = _context(args)
    if ctx.device.type == "cuda":
        ctx = replace(ctx, device=torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))))
    return ctx


def cmd_qat(args: argparse.Namespace) -> None:
    import torch

    from mpqbench import distributed
    from mpqbench.qat import run_qat

    _known_model(args)
    settings = _settings(args)
    bits = _model_bits(args, _unweighted_layers(args, settings), settings)  # before any load
    ctx = _distributed_context(args)
    options = ({"rho": args.rho, "case": args.case, "every": args.every,
                "perturb_space": args.perturb_space}
               if args.protocol == "qat_saq" else None)
    result = run_qat(args.protocol, ctx.model, bits, ctx.splits.train, ctx.splits.input_shape,
                     ctx.profile.qat(), ctx.device, options, resume_path=f"{args.out}.resume",
                     frozen=ctx.fixed)
    if distributed.is_main():
        test = ctx.evaluate(result.model, desc="test")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": result.model.state_dict(), "bits": bits, "top1": test.top1,
                    "history": result.history, "world_size": distributed.rank_and_world()[1]},
                   args.out)
        print(f"{args.protocol} {args.model}: test top-1 {test.top1:.2f}% after "
              f"{result.seconds:.1f} s of training; saved {args.out}")


def cmd_limpq_indicators(args: argparse.Namespace) -> None:
    from mpqbench import distributed
    from mpqbench.limpq import indicator_config, indicators, repair, train_indicators

    ctx = _distributed_context(args)
    searchable = ctx.searchable
    trained = train_indicators(ctx.model, ctx.splits.train, ctx.splits.input_shape, searchable,
                               ctx.profile.method_cfg("limpq")["candidates"],
                               indicator_config(ctx.profile), ctx.device, f"{args.out}.resume")
    if distributed.is_main():
        frame = repair(indicators(trained.model, searchable))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"LIMPQ indicators of {args.model} ({len(frame)} rows, "
              f"{int((~frame.usable).sum())} repaired) after {trained.seconds:.1f} s; "
              f"saved {args.out}")


def cmd_notebook(args: argparse.Namespace) -> None:
    from mpqbench.notebook import run_notebook
    from mpqbench.preflight import preflight
    from mpqbench.stage_guard import guarded_outputs, watch_parent

    parameters = _parameter(args.parameter)
    params_file = str(parameters.get("params_file", "params.yaml"))
    if Path(params_file).is_file():  # `dvc repro -s` skips the params stage: checked here too
        preflight(_checked_params(params_file), Path(params_file).parent)
    watch_parent()  # a killed `dvc repro` takes this runner and its kernel with it
    if args.runs is None:  # the report: cheap, and it writes into results/ itself
        path = run_notebook(args.source, args.out, parameters)
        if args.hide_input:
            from mpqbench.report import render_without_code

            render_without_code(path, path.with_suffix(".html"))
    else:  # a method stage: its committed records stay until a run succeeds
        with guarded_outputs([args.runs, args.out]):
            path = run_notebook(args.source, args.out, parameters, args.runs)
    print(f"executed {args.source} -> {path}")


def cmd_report(args: argparse.Namespace) -> None:
    from mpqbench.conclusions import glance_table, update_block
    from mpqbench.leaderboard import load_grid, update_readme
    from mpqbench.report import write_summary
    from mpqbench.results import load_runs

    df = write_summary(args.runs, args.out)
    print(f"{len(df)} RunRecords summarized in {Path(args.out) / 'summary.csv'}")
    if args.readme:
        changed = update_block(args.readme, glance_table(load_runs(args.runs)))
        print(f"{args.readme}: results at a glance {'updated' if changed else 'unchanged'}")
        changed = update_readme(args.readme, load_grid(args.grid))
        print(f"{args.readme}: leaderboard {'updated' if changed else 'unchanged'}")


def cmd_overlay(args: argparse.Namespace) -> None:
    from mpqbench.overlay import apply_overlay

    changed = apply_overlay(args.params, args.overlay, args.set)
    print(f"{args.params}: {len(changed)} keys set from {args.overlay}"
          + "".join(f"\n  {key}" for key in changed)
          + "\nrun `dvc repro` (or `dvc exp run`); `git checkout params.yaml` goes back")


def cmd_list(args: argparse.Namespace) -> None:
    from mpqbench.data import DATASETS
    from mpqbench.models import MODELS
    from mpqbench.ptq import ROUNDINGS
    from mpqbench.quant.modules import QUANTIZERS
    from mpqbench.quant.observers import OBSERVERS
    from mpqbench.search import SOLVERS
    from mpqbench.sensitivity import METRICS

    params = _checked_params(args.params) if Path(args.params).is_file() else None
    user = sorted((params or {}).get("user_models") or {})  # registered by the check
    shipped = [name for name in MODELS.names() if name not in user]
    print(f"{'models:':12s}", ", ".join(shipped))
    print(f"{'user models:':12s}", ", ".join(user) or "(none in params.yaml user_models)")
    for kind, registry in (("datasets", DATASETS), ("metrics", METRICS),
                           ("solvers", SOLVERS), ("quantizers", QUANTIZERS),
                           ("observers", OBSERVERS), ("roundings", ROUNDINGS)):
        print(f"{kind + ':':12s}", ", ".join(registry.names()))
    if params is not None:
        print(f"{'profiles:':12s}", ", ".join(sorted(params["profiles"])))
        print(f"{'methods:':12s}", ", ".join(sorted(params.get("method_cfg") or {})))


def model_options(p: argparse.ArgumentParser) -> None:
    """--model, --profile and --params: what every command that loads a model takes."""
    p.add_argument("--model", required=True, help="a registered model (`mpqbench list`)")
    p.add_argument("--profile", default=None,
                   help="smoke | quick | paper (default: params.yaml's profile)")
    p.add_argument("--params", default="params.yaml", help="the params file")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless it has none or says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpqbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = _HelpWithDefaults

    p = sub.add_parser("data", formatter_class=fmt,
                       help="prepare a dataset cache (mirror or download)")
    p.add_argument("--dataset", default="cifar10", help="a registered dataset")
    p.add_argument("--out", required=True, help="cache folder, e.g. data/cifar10")
    p.add_argument("--raw", default=None, help="where downloads go (default: <out>/../raw)")
    p.add_argument("--image-root", default=None,
                   help="an image-folder dataset's root (default: imagenet_root of --params)")
    p.add_argument("--params", default="params.yaml", help="the params file")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("check-params", formatter_class=fmt,
                       help="check every key, type and name of params.yaml")
    p.add_argument("--params", default="params.yaml", help="the params file")
    p.add_argument("--out", default=None, help="a file written when the check passes (DVC)")
    p.set_defaults(func=cmd_check_params)

    p = sub.add_parser("checkpoint", formatter_class=fmt,
                       help="adapt the published FP model to the dataset variant")
    model_options(p)
    p.add_argument("--data-dir", default="data", help="where `dvc repro data` put the dataset")
    p.add_argument("--out", default=None, help="default: checkpoints/MODEL.pt")
    p.add_argument("--metrics", default=None,
                   help="default: results/metrics/checkpoint-MODEL.json")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("notebook", formatter_class=fmt,
                       help="execute a notebook with papermill and render it")
    p.add_argument("source", help="notebooks/<name>.py (jupytext) or .ipynb")
    p.add_argument("--out", required=True, help="folder for the executed .ipynb and .html")
    p.add_argument("--runs", default=None, help="folder the notebook must write RunRecords to")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("KEY", "VALUE"))
    p.add_argument("--hide-input", action="store_true",
                   help="render the HTML without code cells (the report; needs no --runs)")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("report", formatter_class=fmt,
                       help="summarize every RunRecord")
    p.add_argument("--runs", default="results/runs", help="the folder of RunRecords")
    p.add_argument("--out", default="results", help="where summary.csv / .md go")
    p.add_argument("--grid", default="results/grid", help="the comparison grid's folder")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="also rewrite the results-at-a-glance and leaderboard blocks of this "
                        "file (README.md) from the records")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("policy-bank", formatter_class=fmt,
                       help="random policies at one budget with measured validation drops")
    model_options(p)
    p.add_argument("--out", default=None, help="default: results/policy_bank/<model>.json")
    p.set_defaults(func=cmd_policy_bank)

    p = sub.add_parser("qat", formatter_class=fmt,
                       help="QAT of one policy (qat_lsq | qat_saq); torchrun-able")
    model_options(p)
    p.add_argument("--protocol", default="qat_lsq", help="qat_lsq or qat_saq")
    p.add_argument("--bits", default="W4A4", help="uniform W{w}A{a} (first/last at W8A8)")
    p.add_argument("--policy", default=None,
                   help="a Policy JSON or a RunRecord JSON (its policy), instead of --bits")
    p.add_argument("--rho", type=float, default=0.4, help="qat_saq: the neighbourhood radius")
    p.add_argument("--case", type=int, default=3, help="qat_saq: the authors' case 1, 2 or 3")
    p.add_argument("--every", type=int, default=1,
                   help="qat_saq: a fresh perturbation every k steps")
    p.add_argument("--perturb-space", default="weight_standardized",
                   choices=["weight_standardized", "raw"],
                   help="qat_saq: the units of rho (default: %(default)s, the authors')")
    p.add_argument("--out", required=True, help="where to save the trained model (.pt)")
    p.set_defaults(func=cmd_qat)

    p = sub.add_parser("limpq-indicators", formatter_class=fmt,
                       help="LIMPQ's joint indicator training; torchrun-able; writes a CSV")
    model_options(p)
    p.add_argument("--out", required=True, help="indicator table (.csv)")
    p.set_defaults(func=cmd_limpq_indicators)

    p = sub.add_parser("overlay", formatter_class=fmt,
                       help="switch params.yaml to another suite, e.g. "
                                       "configs/imagenet.yaml (comments kept)")
    p.add_argument("overlay", help="the overlay file, e.g. configs/imagenet.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a dotted key and a YAML value, after the overlay "
                        "(e.g. imagenet_root=/data/imagenet)")
    p.add_argument("--params", default="params.yaml", help="the params file")
    p.set_defaults(func=cmd_overlay)

    def policy_options(p: argparse.ArgumentParser) -> None:
        model_options(p)
        p.add_argument("--bits", default="W8A8",
                       help="uniform W{w}A{a}, first conv and last linear at W8A8 unless "
                            "fix_first_last is false")
        p.add_argument("--policy", default=None,
                       help="a Policy JSON or a RunRecord JSON (its policy), instead of --bits")

    p = sub.add_parser("cost", formatter_class=fmt,
                       help="size, BitOps and a per-layer table of a policy (no data needed)")
    policy_options(p)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("search", formatter_class=fmt,
                       help="sensitivity metric + solver -> a Policy JSON")
    model_options(p)
    p.add_argument("--metric", default="hessian_trace", help="a sensitivity metric")
    p.add_argument("--solver", default="ilp", help="ilp, ilp-cbc, pareto, random or uniform")
    p.add_argument("--budget", action="append", required=True, metavar="KEY=VALUE",
                   help="a budget limit, e.g. compression_ratio=8 or bitops_equiv=W4A4 "
                        "(repeatable)")
    p.add_argument("--w-bits", default=None,
                   help="weight-bit candidates, e.g. 2,3,4,8 (default: the profile's "
                        "method_cfg.first_order_ptq.bits)")
    p.add_argument("--a-bits", type=int, default=None,
                   help="activation bits of searched layers (default: the profile's "
                        "method_cfg.first_order_ptq.a_bits)")
    p.add_argument("--out", required=True, help="the Policy JSON to write")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ptq", formatter_class=fmt,
                       help="PTQ of a policy on the FP checkpoint, with its test top-1")
    policy_options(p)
    p.add_argument("--rounding", default="nearest", help="nearest or adaround")
    p.set_defaults(func=cmd_ptq)

    p = sub.add_parser("export", formatter_class=fmt,
                       help="PTQ of a policy, then ONNX with QuantizeLinear/DequantizeLinear, "
                            "checked in onnxruntime")
    policy_options(p)
    p.add_argument("--rounding", default="nearest", help="nearest or adaround")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--check-images", type=int, default=-1,
                   help="test images to compare onnxruntime with fake-quant on (-1: all, 0: "
                        "skip)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "list", formatter_class=fmt,
        help="shipped and user models, datasets, metrics, solvers, ...; profiles and methods")
    p.add_argument("--params", default="params.yaml", help="the params file")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # before any tensor, and inherited by the notebook kernel
    try:
        args.func(args)
    except MpqbenchError as exc:
        print(f"mpqbench: error: {exc}", file=sys.stderr)
        return 2
    return 0
