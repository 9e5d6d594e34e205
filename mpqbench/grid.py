"""The comparison grid (issue 16): every allocator at the shared budgets, every protocol on it.

Two steps, each a DVC stage, so that adding an allocator or a protocol runs only its cells:

1. ``allocate``: one allocator, one model. Its sensitivity (or indicators, or draw) is computed
   once and the solver is called once per shared budget of params.yaml ``budgets``. Output:
   ``results/grid/allocations/<allocator>-<model>.json``, holding per budget either the policy
   or why the allocator cannot serve it (a weight-only metric at a BitOps budget, or an
   infeasible budget); the report shows the latter as marked cells, never as gaps.
2. ``evaluate``: one allocator, one protocol, one model. Every budget that
   ``grid.cells.<protocol>.budgets`` names, at every seed of the profile, goes through
   ``protocols.run_policy``; ``cells.jsonl`` beside the records lists each cell's status
   (``ok`` with its run id, ``cut`` on this profile, or the allocation's reason).

Allocators (``ALLOCATORS``):

- ``uniform``: the widest uniform WxA within the budget (activations at ``a_bits`` for a size
  budget; W = A for a BitOps budget).
- ``random``: a random policy meeting the budget (``search.random_bits``, the policy bank's
  sampler) over the same widths.
- ``first_order``, ``hessian_trace``, ``fisher_fit``: the sensitivity metrics of
  ``method_cfg.first_order_ptq`` (weights only, activations at its ``a_bits``) and the ILP.
- ``hawq_v3``: HAWQ-V3's setting (Yao et al. 2021): the Hessian trace restricted to
  ``method_cfg.first_order_ptq.hawq_v3.bits``; at a BitOps budget with W = A.
- ``task_loss``, ``zeroq_kl``: the data-free metrics of ``method_cfg.data_free`` (the tables its
  ``allocate`` names) on their own synthetic images.
- ``limpq``: LIMPQ's learned indicators (Tang et al. 2022), read from the ``limpq`` stage's
  records (one indicator training per model, shared with that notebook); at a BitOps budget
  weights and activations, at a size budget the weight indicators with activations at 8 bits.

Run ids: ``grid-<model>-<allocator>-<budget name>-<protocol tag>-s<seed>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mpqbench.config import load_params, profile_settings
from mpqbench.context import Context, build_context
from mpqbench.cost import Budget, cost_summary
from mpqbench.errors import MpqbenchError
from mpqbench.limpq import indicator_table
from mpqbench.malloc import keep_freed_memory
from mpqbench.naming import protocol_tag, run_id
from mpqbench.params_schema import check_params
from mpqbench.preflight import preflight
from mpqbench.protocols import PROTOCOLS, Allocation, run_policy, search_allocation
from mpqbench.registry import Registry
from mpqbench.results import load_runs
from mpqbench.search import random_bits, uniform_bits
from mpqbench.sensitivity import SensitivityTable, compute, metric_options, restrict_table
from mpqbench.stage_guard import guarded_outputs, watch_parent
from mpqbench.synth import SynthConfig, generate

ALLOCATION_SCHEMA = 1
Outcome = Allocation | str  # a policy, or why the allocator cannot serve the budget


def budget_kind(budget: Budget) -> str:
    """``bitops`` when the budget bounds BitOps (activation bits count), else ``size``."""
    return "bitops" if budget.bitops_g is not None or budget.bitops_equiv is not None else "size"


def shared_budgets(settings: dict[str, Any]) -> dict[str, Budget]:
    """params.yaml ``budgets``: name -> Budget."""
    declared = settings.get("budgets") or {}
    if not declared:
        raise MpqbenchError("params.yaml declares no budgets: add budgets: {size8x: "
                            "{compression_ratio: 8}, ...} for the grid")
    return {name: Budget.from_dict(spec) for name, spec in declared.items()}


def grid_settings(settings: dict[str, Any]) -> dict[str, Any]:
    grid = settings.get("grid")
    if not grid:
        raise MpqbenchError("params.yaml has no grid: section; see the shipped params.yaml")
    return grid


@dataclass(frozen=True)
class Allocator:
    """``solve(ctx, budgets)`` -> budget name -> Allocation or the reason it cannot serve it.
    ``what``: one line for the report."""

    solve: Callable[[Context, dict[str, Budget]], dict[str, Outcome]]
    what: str


ALLOCATORS: Registry[Allocator] = Registry("allocator")


def _solve_all(ctx: Context, table: SensitivityTable, budgets: dict[str, Budget],
               weight_only: bool, seconds: float | None = None) -> dict[str, Outcome]:
    """The ILP on ``table`` at each budget; a weight-only table does not serve BitOps."""
    out: dict[str, Outcome] = {}
    for name, budget in budgets.items():
        if weight_only and budget_kind(budget) == "bitops":
            out[name] = ("cannot serve: a weight-only metric (activations fixed at "
                         f"A{int(table.frame.a_bits.iloc[0])}) does not score activation bits, "
                         "which a BitOps budget trades")
            continue
        try:
            allocation = search_allocation(ctx, table, budget)
        except MpqbenchError as exc:
            out[name] = f"infeasible: {exc}"
            continue
        if seconds is not None:
            allocation.seconds["sensitivity_s"] = seconds
        out[name] = allocation
    return out


def _first_order_cfg(ctx: Context) -> dict[str, Any]:
    return ctx.profile.method_cfg("first_order_ptq")


def _metric_allocator(metric: str) -> Callable[[Context, dict[str, Budget]], dict[str, Outcome]]:
    def solve(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
        cfg = _first_order_cfg(ctx)
        table = compute(metric, ctx.sensitivity_context(cfg["bits"], cfg["a_bits"]),
                        **metric_options(ctx.settings, cfg, metric))
        return _solve_all(ctx, table, budgets, weight_only=True)
    return solve


for _metric in ("first_order", "hessian_trace", "fisher_fit"):
    ALLOCATORS.add(_metric, Allocator(
        _metric_allocator(_metric),
        f"{_metric} sensitivity (method_cfg.first_order_ptq.metrics) + ILP, weights only"))


def _uniform(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
    cfg = _first_order_cfg(ctx)
    widths, a_bits = sorted(cfg["bits"], reverse=True), int(cfg["a_bits"])
    out: dict[str, Outcome] = {}
    for name, budget in budgets.items():
        bitops = budget_kind(budget) == "bitops"
        for w in widths:
            bits = uniform_bits(ctx.layers, w, w if bitops else a_bits, ctx.fixed)
            if all(limit.total(ctx.layers, bits) <= limit.bound * (1 + 1e-9)
                   for limit in budget.limits(ctx.layers, ctx.fixed)):
                config = f"W{w}A{w if bitops else a_bits}"
                out[name] = Allocation(bits, solver="uniform", budget=budget.describe(),
                                       bit_candidates=sorted(cfg["bits"]),
                                       extra={"config": config})
                break
        else:
            out[name] = f"infeasible: no uniform width of {sorted(widths)} meets the budget"
    return out


def _random(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
    cfg = _first_order_cfg(ctx)
    out: dict[str, Outcome] = {}
    for name, budget in budgets.items():
        if budget_kind(budget) == "bitops":
            choices = [(w, a) for w in cfg["bits"] for a in cfg["bits"]]
        else:
            choices = [(w, int(cfg["a_bits"])) for w in cfg["bits"]]
        start = time.perf_counter()
        try:
            bits = random_bits(choices, ctx.layers, budget, ctx.fixed, seed=ctx.seed)
        except MpqbenchError as exc:
            out[name] = f"infeasible: {exc}"
            continue
        out[name] = Allocation(bits, metric="random", solver="random", budget=budget.describe(),
                               bit_candidates=sorted(cfg["bits"]),
                               seconds={"search_s": time.perf_counter() - start},
                               extra={"draw_seed": ctx.seed})
    return out


def _hawq_v3(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
    cfg = _first_order_cfg(ctx)
    v3 = cfg["hawq_v3"]
    table = compute(v3["metric"], ctx.sensitivity_context(cfg["bits"], cfg["a_bits"]),
                    **metric_options(ctx.settings, cfg, v3["metric"]))
    out: dict[str, Outcome] = {}
    for name, budget in budgets.items():
        bitops = budget_kind(budget) == "bitops"
        restricted = restrict_table(table, v3["bits"], None if bitops else cfg["a_bits"])
        restricted.metric = "hawq_v3"
        out.update(_solve_all(ctx, restricted, {name: budget}, weight_only=False))
    return out


def _data_free(metric: str) -> Callable[[Context, dict[str, Budget]], dict[str, Outcome]]:
    def solve(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
        cfg = ctx.profile.method_cfg("data_free")
        names = [n for n in cfg["allocate"] if cfg["tables"][n]["metric"] == metric]
        if not names:
            raise MpqbenchError(f"method_cfg.data_free.allocate names no table of metric "
                                f"{metric!r}; add one (see params.yaml)")
        spec = cfg["tables"][names[0]]
        config = SynthConfig.from_dict({**cfg["synth"][spec["data"]],
                                        **ctx.settings.get("synth", {})})
        start = time.perf_counter()
        data = generate(spec["data"], ctx.model, ctx.splits.input_shape,
                        ctx.splits.num_classes, config, ctx.device, ctx.seed)
        synth_s = time.perf_counter() - start
        batches = [(x.to(ctx.device), y.to(ctx.device))
                   for x, y in data.batches(ctx.profile.ptq.batch_size)]
        table = compute(metric, ctx.sensitivity_context(cfg["bits"], cfg["a_bits"], batches),
                        **(spec.get("options") or {}))
        table.extra = {**table.extra, "synthetic_s": synth_s, "table": names[0]}
        return _solve_all(ctx, table, budgets, weight_only=True,
                          seconds=table.seconds + synth_s)
    return solve


def limpq_indicator_frame(runs_dir: str | Path, profile: str) -> tuple[pd.DataFrame, float]:
    """The indicators LIMPQ's stage trained on ``profile`` (``extra.indicators`` of its
    records, the same in each) and their training seconds."""
    runs = [run for run in load_runs(runs_dir) if run.extra.get("indicators")]
    if not runs:
        raise MpqbenchError(f"{runs_dir} holds no LIMPQ record with indicators; run "
                            "`dvc repro limpq` first")
    run = runs[0]
    if run.provenance.get("profile") != profile:
        raise MpqbenchError(f"{runs_dir}: LIMPQ's indicators were trained on profile "
                            f"{run.provenance.get('profile')!r}, not {profile!r}; run `dvc repro "
                            "limpq` on this profile first")
    return pd.DataFrame(run.extra["indicators"]), float(run.timing.get("sensitivity_s", 0.0))


def _limpq(ctx: Context, budgets: dict[str, Budget]) -> dict[str, Outcome]:
    cfg = ctx.profile.method_cfg("limpq")
    frame, seconds = limpq_indicator_frame(f"results/runs/limpq-{ctx.model_name}",
                                           ctx.profile.name)
    table = indicator_table(frame, cfg["alpha"], seconds)
    # size budgets keep activations at 8 bits, as for every allocator: the weight
    # indicators alone (a layer without activation rows is scored at 8-bit inputs)
    weights = indicator_table(frame[frame["kind"] == "weight"], cfg["alpha"], seconds)
    out: dict[str, Outcome] = {}
    for name, budget in budgets.items():
        chosen = table if budget_kind(budget) == "bitops" else weights
        out.update(_solve_all(ctx, chosen, {name: budget}, weight_only=False, seconds=seconds))
    return out


ALLOCATORS.add("uniform", Allocator(_uniform, "the widest uniform width within the budget"))
ALLOCATORS.add("random", Allocator(_random, "a random policy meeting the budget (the policy "
                                   "bank's sampler, seed = params seed)"))
ALLOCATORS.add("hawq_v3", Allocator(_hawq_v3, "HAWQ-V3: Hessian trace, widths of "
                                    "method_cfg.first_order_ptq.hawq_v3.bits, W = A at BitOps"))
ALLOCATORS.add("task_loss", Allocator(_data_free("task_loss"), "Lee et al. 2021: task loss on "
                                      "labeled synthetic images + ILP, weights only"))
ALLOCATORS.add("zeroq_kl", Allocator(_data_free("zeroq_kl"), "ZeroQ: KL on distilled images "
                                     "+ ILP, weights only"))
ALLOCATORS.add("limpq", Allocator(_limpq, "LIMPQ's learned indicators (the limpq stage) + ILP, "
                                  "weights and activations"))


def check_names(settings: dict[str, Any], allocator: str, protocol: str | None = None) -> None:
    """The allocator is registered and listed in ``grid.allocators``; the protocol has cells."""
    grid = grid_settings(settings)
    ALLOCATORS.get(allocator)
    if allocator not in grid["allocators"]:
        raise MpqbenchError(f"allocator {allocator!r} is not in params.yaml grid.allocators "
                            f"({', '.join(grid['allocators'])}); add it there")
    unknown = [name for name in grid["allocators"] if name not in ALLOCATORS]
    if unknown:
        raise MpqbenchError(f"params.yaml grid.allocators: unknown allocator {unknown[0]!r}; "
                            f"known: {', '.join(ALLOCATORS.names())}")
    if protocol is not None:
        PROTOCOLS.get(protocol)
        if protocol not in grid["cells"]:
            raise MpqbenchError(f"protocol {protocol!r} has no grid.cells entry in params.yaml; "
                                f"cells: {', '.join(grid['cells'])}")


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, str):
        return {"status": outcome.split(":")[0], "reason": outcome}
    return {"status": "ok", "allocation": asdict(outcome)}


def allocate(ctx: Context, allocator: str, out: str | Path) -> dict[str, Any]:
    """Run ``allocator`` at every shared budget; write ``out`` (JSON) in one piece."""
    check_names(ctx.settings, allocator)
    budgets = shared_budgets(ctx.settings)
    start = time.perf_counter()
    outcomes = ALLOCATORS.get(allocator).solve(ctx, budgets)
    doc = {"schema_version": ALLOCATION_SCHEMA, "allocator": allocator, "model": ctx.model_name,
           "profile": ctx.profile.name, "seconds": time.perf_counter() - start,
           "what": ALLOCATORS.get(allocator).what,
           "budgets": {name: {"budget": budgets[name].describe(),
                              **_outcome_json(outcomes[name])} for name in budgets}}
    for name, entry in doc["budgets"].items():
        if entry["status"] == "ok":
            entry["cost"] = cost_summary(ctx.layers, outcomes[name].bits)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(doc, indent=1, sort_keys=True, default=list) + "\n")
    partial.replace(out)
    return doc


def load_allocation(path: str | Path, model_name: str, profile: str) -> dict[str, Any]:
    """An ``allocate`` output, checked to be of this model and profile."""
    path = Path(path)
    if not path.is_file():
        raise MpqbenchError(f"{path} is missing; run its allocate stage first (dvc repro "
                            "allocate)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MpqbenchError(f"{path} is not valid JSON ({exc}); delete it and re-run its "
                            "allocate stage") from None
    if doc.get("schema_version") != ALLOCATION_SCHEMA:
        raise MpqbenchError(f"{path}: schema {doc.get('schema_version')}, expected "
                            f"{ALLOCATION_SCHEMA}; re-run its allocate stage")
    if (doc.get("model"), doc.get("profile")) != (model_name, profile):
        raise MpqbenchError(f"{path} was made for {doc.get('model')} on profile "
                            f"{doc.get('profile')!r}, not {model_name} on {profile!r}; re-run "
                            "its allocate stage")
    return doc


def _allocation_from(entry: dict[str, Any]) -> Allocation:
    fields = dict(entry["allocation"])
    fields["bits"] = {name: (int(w), int(a)) for name, (w, a) in fields["bits"].items()}
    return Allocation(**fields)


def cell_plan(settings: dict[str, Any], allocator: str, protocol: str
              ) -> tuple[list[str], int, dict[str, tuple[str, str]]]:
    """The budgets ``protocol`` evaluates, its number of seeds on this profile, and the budgets
    it skips for ``allocator`` with (status, reason): ``not applicable`` where
    ``grid.cells.<protocol>.only.<budget>`` lists other allocators, ``cut`` where this
    profile's ``cut`` names the allocator (every budget) or ``allocator@budget``."""
    cell = grid_settings(settings)["cells"][protocol]
    profile = settings["profile"]
    seeds = int(cell["seeds"].get(profile, 1))
    cut = set((cell.get("cut") or {}).get(profile) or [])
    only = cell.get("only") or {}
    skipped: dict[str, tuple[str, str]] = {}
    for budget in cell["budgets"]:
        if budget in only and allocator not in only[budget]:
            skipped[budget] = ("not applicable", f"params.yaml grid.cells.{protocol}.only."
                               f"{budget} lists {', '.join(only[budget])}")
        elif allocator in cut or f"{allocator}@{budget}" in cut:
            skipped[budget] = ("cut", f"cut on profile {profile!r} (params.yaml "
                                      f"grid.cells.{protocol}.cut)")
    return list(cell["budgets"]), seeds, skipped


def nothing_to_run(settings: dict[str, Any], allocator: str, protocol: str) -> bool:
    """True when the profile skips every budget of ``allocator`` x ``protocol``."""
    budgets, _, skipped = cell_plan(settings, allocator, protocol)
    return set(budgets) <= set(skipped)


def grid_run_id(model_name: str, allocator: str, budget: str, protocol: str, seed: int) -> str:
    return run_id("grid", model_name, allocator, budget, protocol_tag(protocol), f"s{seed}")


def cut_cells(settings: dict[str, Any], allocator: str, protocol: str, runs_dir: str | Path
              ) -> list[dict[str, Any]]:
    """The cells of an allocator the profile skips at every budget of ``protocol``: no model
    is loaded."""
    budgets, seeds, skipped = cell_plan(settings, allocator, protocol)
    if not nothing_to_run(settings, allocator, protocol):
        raise MpqbenchError(f"{allocator} x {protocol} has cells to run on profile "
                            f"{settings['profile']!r}")
    cells = [_skipped_cell(allocator, protocol, budget, settings["seed"] + i, *skipped[budget])
             for budget in budgets for i in range(seeds)]
    _write_cells(runs_dir, cells)
    return cells


def _skipped_cell(allocator: str, protocol: str, budget: str, seed: int, status: str,
                  reason: str) -> dict[str, Any]:
    return {"allocator": allocator, "protocol": protocol, "budget": budget, "seed": seed,
            "status": status, "reason": reason}


def _write_cells(runs_dir: str | Path, cells: list[dict[str, Any]]) -> None:
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / "cells.jsonl").write_text("".join(json.dumps(c, sort_keys=True) + "\n"
                                                  for c in cells))


def evaluate_cells(ctx: Context, allocator: str, protocol: str, allocation_path: str | Path,
                   runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every (budget, seed) cell of ``allocator`` x ``protocol``: a RunRecord each where the
    allocation serves the budget; ``runs_dir/cells.jsonl`` lists every cell's status."""
    check_names(ctx.settings, allocator, protocol)
    budgets, seeds, skipped = cell_plan(ctx.settings, allocator, protocol)
    if nothing_to_run(ctx.settings, allocator, protocol):
        return cut_cells(ctx.settings, allocator, protocol, runs_dir)
    runs_dir = Path(runs_dir)
    doc = load_allocation(allocation_path, ctx.model_name, ctx.profile.name)
    missing = [b for b in budgets if b not in doc["budgets"] and b not in skipped]
    if missing:
        raise MpqbenchError(f"{allocation_path} has no budget {missing[0]!r}; re-run its "
                            "allocate stage (params.yaml budgets changed)")
    grid = grid_settings(ctx.settings)
    options = (grid.get("protocol_options") or {}).get(protocol) or {}
    qat_overrides = (grid.get("qat") or {}).get(ctx.profile.name)
    is_qat = protocol.startswith("qat")
    runs_dir.mkdir(parents=True, exist_ok=True)
    ctx = replace(ctx, runs_dir=runs_dir)
    cells = []
    for budget in budgets:
        for i in range(seeds):
            seed = ctx.seed + i
            cell = {"allocator": allocator, "protocol": protocol, "budget": budget, "seed": seed}
            if budget in skipped:
                cells.append(_skipped_cell(allocator, protocol, budget, seed, *skipped[budget]))
                continue
            entry = doc["budgets"][budget]
            if entry["status"] != "ok":
                cells.append({**cell, "status": entry["status"], "reason": entry["reason"]})
                continue
            rid = grid_run_id(ctx.model_name, allocator, budget, protocol, seed)
            outcome = run_policy(
                ctx, _allocation_from(entry), protocol, seed, method="grid", run_id=rid,
                options=options if is_qat else None,
                qat=ctx.profile.qat(qat_overrides, seed) if is_qat else None,
                extra={"grid": {**cell, "allocation_seconds": doc["seconds"]},
                       "budget_name": budget})
            cells.append({**cell, "status": "ok", "run_id": rid,
                          "top1": outcome.record.accuracy["top1"]})
    _write_cells(runs_dir, cells)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpqbench.grid", description=__doc__
                                     .split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    alloc = sub.add_parser("allocate", help="one allocator at every shared budget")
    alloc.add_argument("--allocator", required=True)
    alloc.add_argument("--out", required=True, help="the allocation JSON to write")
    ev = sub.add_parser("evaluate", help="one allocator's policies through one protocol")
    ev.add_argument("--allocator", required=True)
    ev.add_argument("--protocol", required=True)
    ev.add_argument("--allocations", default="results/grid/allocations")
    ev.add_argument("--runs", required=True, help="the folder of this cell's RunRecords")
    for p in (alloc, ev):
        p.add_argument("--model", required=True)
        p.add_argument("--profile", required=True)
        p.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    keep_freed_memory()  # before the model and data are loaded
    try:
        params = load_params(args.params)
        check_params(params, Path(args.params).resolve().parent)
        preflight(params, Path(args.params).resolve().parent)  # `dvc repro -s` skips params
        settings = profile_settings(args.profile, params)
        check_names(settings, args.allocator, getattr(args, "protocol", None))
        watch_parent()  # a killed `dvc repro` takes this process with it
        if args.command == "allocate":
            ctx = build_context(args.model, args.profile, args.params, evaluate_fp=False)
            with guarded_outputs([args.out]):
                allocate(ctx, args.allocator, args.out)
            return 0
        if nothing_to_run(settings, args.allocator, args.protocol):
            with guarded_outputs([args.runs]):
                cut_cells(settings, args.allocator, args.protocol, args.runs)
            return 0
        path = Path(args.allocations, f"{args.allocator}-{args.model}.json")
        load_allocation(path, args.model, args.profile)  # before the model is loaded
        ctx = build_context(args.model, args.profile, args.params)
        with guarded_outputs([args.runs]):  # the committed cells stay until every cell ran
            evaluate_cells(ctx, args.allocator, args.protocol, path, args.runs)
        return 0
    except MpqbenchError as exc:
        print(f"mpqbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
