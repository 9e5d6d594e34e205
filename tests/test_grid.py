"""The comparison grid (mpqbench/grid.py): every registered allocator at shared budgets, the
evaluation cells with their marked statuses, the CLI's checks before compute, and the
leaderboard's intervals against hand computations.

An allocator added to ``ALLOCATORS`` is tested here without editing this file.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from mpqbench.context import EvalConfig, Profile, context_for
from mpqbench.cost import Budget
from mpqbench.data import Splits
from mpqbench.errors import MpqbenchError
from mpqbench.grid import (
    ALLOCATORS,
    allocate,
    budget_kind,
    cell_plan,
    cut_cells,
    evaluate_cells,
    load_allocation,
    main,
)
from mpqbench.intervals import t_975
from mpqbench.leaderboard import (
    Cell,
    Grid,
    compact_table,
    grid_verdicts,
    load_grid,
    paired_difference,
    update_readme,
    write_leaderboard,
)
from mpqbench.protocols import Allocation, run_policy
from mpqbench.ptq import PtqConfig
from mpqbench.results import encode_correct, load_runs

from .test_protocols import _split  # the same toy images

BUDGETS = {"size8x": {"compression_ratio": 8}, "size10.67x": {"compression_ratio": 10.67},
           "W4A4eq": {"bitops_equiv": "W4A4"}}
TINY_SYNTH = {"images": 8, "batch_size": 4, "iters": 2}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


def _settings(cells=None):
    return {
        "fix_first_last": True, "seed": 0, "profile": "t", "budgets": BUDGETS,
        "qat": {"epochs": 1, "max_batches_per_epoch": 2, "batch_size": 8, "lr": 0.01},
        "grid": {"allocators": ALLOCATORS.names(),
                 "cells": cells or {"ptq-nearest": {"budgets": ["size8x", "W4A4eq"],
                                                    "seeds": {"t": 2}},
                                    "qat_lsq": {"budgets": ["W4A4eq"], "seeds": {"t": 1},
                                                "cut": {"t": ["random"]}}},
                 "qat": {"t": {"max_batches_per_epoch": 1}}},
        "method_cfg": {
            "first_order_ptq": {
                "bits": [2, 3, 4, 8], "a_bits": 8,
                "metrics": {"first_order": {}, "fisher_fit": {},
                            "hessian_trace": {"max_iters": 4, "min_iters": 2,
                                              "max_images": 8}},
                "hawq_v3": {"metric": "hessian_trace", "bits": [4, 8]}},
            "data_free": {
                "bits": [2, 3, 4, 8], "a_bits": 8,
                "synth": {"labeled": {**TINY_SYNTH, "soft_target": 0.7},
                          "zeroq": TINY_SYNTH},
                "tables": {"task_loss-low-synthetic": {"metric": "task_loss", "data": "labeled",
                                                       "options": {"others": "low"}},
                           "zeroq_kl-zeroq": {"metric": "zeroq_kl", "data": "zeroq",
                                              "options": {}}},
                "allocate": ["task_loss-low-synthetic", "zeroq_kl-zeroq"]},
            "limpq": {"alpha": 2.0}},
    }


def _context(tmp_path, cells=None):
    profile = Profile("t", 0, "toy", "cpu", EvalConfig(16),
                      PtqConfig(calib_images=16, batch_size=8, adaround_iters=2,
                                adaround_batch_size=4),
                      _settings(cells))
    splits = Splits(_split(32, 1), _split(8, 2), _split(24, 3), "toy", "toy", ["a", "b", "c"],
                    (3, 8, 8))
    return context_for("toy", _model(), splits, profile)


def _write_limpq_record(ctx, root):
    """A LIMPQ record holding hand-made indicators (narrower widths, larger steps), as the
    limpq stage saves them."""
    rows = []
    for i, name in enumerate(ctx.searchable):
        for b in (2, 3, 4, 5, 6):
            rows.append({"layer": name, "bits": b, "kind": "weight",
                         "indicator": (1 + i) / b ** 2, "at_bound": False, "usable": True})
            rows.append({"layer": name, "bits": b, "kind": "activation",
                         "indicator": (3 - i) / b, "at_bound": False, "usable": True})
    ctx.evaluate_fp()
    limpq_dir = root / "results" / "runs" / "limpq-toy"
    allocation = Allocation({n: (8, 8) for n in ctx.fixed} | {n: (4, 4) for n in ctx.searchable},
                            seconds={"sensitivity_s": 12.5}, extra={"indicators": rows})
    record = run_policy(ctx, allocation, "ptq-nearest", method="limpq", run_id="limpq-toy-x",
                        resume_dir=None).record
    record_path = limpq_dir / "limpq-toy-x.json"
    limpq_dir.mkdir(parents=True)
    record_path.write_text(json.dumps(record.to_dict()))
    return pd.DataFrame(rows)


def _meets(ctx, bits, spec) -> bool:
    """An independent count of the budget: weight bits for size, MACs x w x a for BitOps."""
    if "compression_ratio" in spec:
        total = sum(layer.params for layer in ctx.layers)
        used = sum(layer.params * bits[layer.name][0] for layer in ctx.layers)
        return used <= 32 * total / spec["compression_ratio"] * (1 + 1e-9)
    w, a = 4, 4
    ref = {layer.name: ctx.fixed.get(layer.name, (w, a)) for layer in ctx.layers}
    bound = sum(layer.macs * ref[layer.name][0] * layer.input_bits(ref[layer.name][1])
                for layer in ctx.layers)
    used = sum(layer.macs * bits[layer.name][0] * layer.input_bits(bits[layer.name][1])
               for layer in ctx.layers)
    return used <= bound * (1 + 1e-9)


@pytest.mark.parametrize("allocator", ALLOCATORS.names())
def test_every_allocator_serves_each_budget_or_says_why(allocator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = _context(tmp_path)
    if allocator == "limpq":
        _write_limpq_record(ctx, tmp_path)
    doc = allocate(ctx, allocator, tmp_path / "alloc.json")
    assert json.loads((tmp_path / "alloc.json").read_text()) == json.loads(
        json.dumps(doc, default=list))
    assert set(doc["budgets"]) == set(BUDGETS)
    for name, entry in doc["budgets"].items():
        bitops = budget_kind(Budget.from_dict(BUDGETS[name])) == "bitops"
        if entry["status"] == "ok":
            bits = {k: tuple(v) for k, v in entry["allocation"]["bits"].items()}
            assert _meets(ctx, bits, BUDGETS[name]), (allocator, name)
            assert all(bits[n] == (8, 8) for n in ctx.fixed)
            if not bitops:  # size budgets keep activations at 8 bits
                assert all(a == 8 for n, (_, a) in bits.items())
        else:
            assert entry["status"] in ("cannot serve", "infeasible") and entry["reason"]
    weight_only = {"first_order", "hessian_trace", "fisher_fit", "task_loss", "zeroq_kl"}
    if allocator in weight_only:
        assert doc["budgets"]["W4A4eq"]["status"] == "cannot serve"
        assert doc["budgets"]["size8x"]["status"] == "ok"


def test_uniform_takes_the_widest_width_within_each_budget(tmp_path):
    ctx = _context(tmp_path)
    doc = allocate(ctx, "uniform", tmp_path / "u.json")
    for name, spec in BUDGETS.items():
        bitops = "bitops_equiv" in spec
        fits = [w for w in (2, 3, 4, 8) if _meets(ctx, {
            layer.name: ctx.fixed.get(layer.name, (w, w if bitops else 8))
            for layer in ctx.layers}, spec)]
        (w, a), = {tuple(v) for n, v in doc["budgets"][name]["allocation"]["bits"].items()
                   if n not in ctx.fixed}
        assert w == max(fits) and a == (w if bitops else 8)


def test_hawq_v3_keeps_its_widths_and_w_equal_a_at_bitops(tmp_path):
    ctx = _context(tmp_path)
    doc = allocate(ctx, "hawq_v3", tmp_path / "h.json")
    entry = doc["budgets"]["W4A4eq"]
    assert entry["status"] == "ok"
    for name, (w, a) in entry["allocation"]["bits"].items():
        if name not in ctx.fixed:
            assert w in (4, 8) and a == w
    # all-4 is the cheapest {4, 8} policy: a budget below it is marked, not solved
    assert doc["budgets"]["size10.67x"]["status"] == "infeasible"


def test_limpq_allocations_are_the_best_policy_by_brute_force(tmp_path, monkeypatch):
    """The stage's indicators, scored I_a(b_a) + alpha I_w(b_w) (activations at 8 bits at a
    size budget), minimised over every policy of the three searchable layers. The toy
    indicators tie (2.115 two ways), so the chosen policy must meet the budget and score the
    brute-force minimum, not be the first minimum found."""
    monkeypatch.chdir(tmp_path)
    ctx = _context(tmp_path)
    frame = _write_limpq_record(ctx, tmp_path)
    doc = allocate(ctx, "limpq", tmp_path / "l.json")
    ind = {(r.layer, r.kind, r.bits): r.indicator for r in frame.itertuples()}
    for name, spec in BUDGETS.items():
        bitops = "bitops_equiv" in spec
        acts = (2, 3, 4, 5, 6) if bitops else (8,)
        choices = [(w, a) for w in (2, 3, 4, 5, 6) for a in acts]

        def score(bits, bitops=bitops):
            return sum(2.0 * ind[(n, "weight", bits[n][0])]
                       + (ind[(n, "activation", bits[n][1])] if bitops else 0.0)
                       for n in ctx.searchable)

        feasible = [bits for combo in itertools.product(choices, repeat=len(ctx.searchable))
                    if _meets(ctx, bits := {**ctx.fixed, **dict(zip(ctx.searchable, combo,
                                                                     strict=True))}, spec)]
        best_score = min(score(bits) for bits in feasible)
        got = {k: tuple(v) for k, v in doc["budgets"][name]["allocation"]["bits"].items()}
        assert got in feasible and score(got) == pytest.approx(best_score, abs=1e-9), name
    assert doc["budgets"]["size8x"]["allocation"]["seconds"]["sensitivity_s"] == 12.5


def test_random_draws_are_the_same_for_the_same_seed(tmp_path):
    ctx = _context(tmp_path)
    a = allocate(ctx, "random", tmp_path / "a.json")
    b = allocate(ctx, "random", tmp_path / "b.json")
    for name in BUDGETS:
        assert a["budgets"][name]["allocation"]["bits"] == b["budgets"][name]["allocation"][
            "bits"]


def test_evaluate_runs_every_seed_and_marks_what_it_cannot_run(tmp_path):
    ctx = _context(tmp_path)
    ctx.evaluate_fp()
    allocate(ctx, "first_order", tmp_path / "alloc" / "first_order-toy.json")
    cells = evaluate_cells(ctx, "first_order", "ptq-nearest",
                           tmp_path / "alloc" / "first_order-toy.json", tmp_path / "runs")
    by = {(c["budget"], c["seed"]): c for c in cells}
    assert set(by) == {("size8x", 0), ("size8x", 1), ("W4A4eq", 0), ("W4A4eq", 1)}
    assert by[("W4A4eq", 0)]["status"] == "cannot serve"
    records = {r.run_id: r for r in load_runs(tmp_path / "runs")}
    assert set(records) == {"grid-toy-first_order-size8x-nearest-s0",
                            "grid-toy-first_order-size8x-nearest-s1"}
    seeds = {r.provenance["seed"] for r in records.values()}
    assert seeds == {0, 1}
    for record in records.values():
        assert record.extra["budget_name"] == "size8x" and record.method == "grid"
    listed = (tmp_path / "runs" / "cells.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in listed] == cells
    # the seeds differ in their calibration draw, so their runs are not copies
    r0, r1 = (records[f"grid-toy-first_order-size8x-nearest-s{s}"] for s in (0, 1))
    assert r0.extra["test_correct"] != r1.extra["test_correct"] or (
        r0.accuracy["loss"] != r1.accuracy["loss"])


def test_a_cut_cell_loads_nothing_and_qat_uses_the_grid_schedule(tmp_path):
    ctx = _context(tmp_path)
    cells = cut_cells(ctx.settings, "random", "qat_lsq", tmp_path / "cut")
    assert [c["status"] for c in cells] == ["cut"] and "grid.cells.qat_lsq.cut" in (
        cells[0]["reason"])
    ctx.evaluate_fp()
    allocate(ctx, "uniform", tmp_path / "uniform-toy.json")
    (cell,) = evaluate_cells(ctx, "uniform", "qat_lsq", tmp_path / "uniform-toy.json",
                             tmp_path / "runs")
    (record,) = load_runs(tmp_path / "runs")
    assert cell["status"] == "ok" and record.extra["qat"]["max_batches_per_epoch"] == 1


def test_per_budget_cuts_and_only_lists_skip_cells_before_any_run(tmp_path):
    """``allocator@budget`` cuts one budget; ``only`` keeps a budget to the allocators it lists;
    an allocator skipped at every budget loads nothing."""
    cells = {"qat_lsq": {"budgets": ["W4A4eq", "size8x"], "seeds": {"t": 2},
                         "only": {"size8x": ["uniform", "limpq"]},
                         "cut": {"t": ["uniform@W4A4eq", "random@W4A4eq"]}}}
    ctx = _context(tmp_path, cells)
    assert cell_plan(ctx.settings, "uniform", "qat_lsq")[2] == {
        "W4A4eq": ("cut", "cut on profile 't' (params.yaml grid.cells.qat_lsq.cut)")}
    # random: cut at W4A4eq, not in the design at size8x: nothing runs, no model is needed
    statuses = {(c["budget"], c["seed"]): c["status"]
                for c in cut_cells(ctx.settings, "random", "qat_lsq", tmp_path / "random")}
    assert statuses == {("W4A4eq", 0): "cut", ("W4A4eq", 1): "cut",
                        ("size8x", 0): "not applicable", ("size8x", 1): "not applicable"}
    with pytest.raises(MpqbenchError, match="uniform x qat_lsq has cells to run"):
        cut_cells(ctx.settings, "uniform", "qat_lsq", tmp_path / "u")
    ctx.evaluate_fp()
    allocate(ctx, "uniform", tmp_path / "uniform-toy.json")
    done = evaluate_cells(ctx, "uniform", "qat_lsq", tmp_path / "uniform-toy.json",
                          tmp_path / "runs")
    assert [(c["budget"], c["seed"], c["status"]) for c in done] == [
        ("W4A4eq", 0, "cut"), ("W4A4eq", 1, "cut"), ("size8x", 0, "ok"), ("size8x", 1, "ok")]
    assert sorted(r.extra["budget_name"] for r in load_runs(tmp_path / "runs")) == [
        "size8x", "size8x"]


def test_allocation_files_are_checked_before_any_run(tmp_path):
    ctx = _context(tmp_path)
    with pytest.raises(MpqbenchError, match="missing; run its allocate stage"):
        load_allocation(tmp_path / "nope.json", "toy", "t")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MpqbenchError, match="not valid JSON"):
        load_allocation(tmp_path / "bad.json", "toy", "t")
    allocate(ctx, "uniform", tmp_path / "u.json")
    with pytest.raises(MpqbenchError, match="made for toy on profile 't'"):
        load_allocation(tmp_path / "u.json", "toy", "quick")
    doc = json.loads((tmp_path / "u.json").read_text())
    del doc["budgets"]["size8x"]
    (tmp_path / "u.json").write_text(json.dumps(doc))
    with pytest.raises(MpqbenchError, match="no budget 'size8x'"):
        evaluate_cells(ctx, "uniform", "ptq-nearest", tmp_path / "u.json", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_cli_names_unknown_allocators_and_protocols(tmp_path, capsys):
    common = ["--model", "resnet20", "--profile", "smoke"]
    assert main(["allocate", "--allocator", "hessain", "--out", str(tmp_path / "x.json"),
                 *common]) == 2
    assert capsys.readouterr().err.startswith("mpqbench: error: unknown allocator 'hessain'")
    assert main(["evaluate", "--allocator", "uniform", "--protocol", "qat_lsd", "--runs",
                 str(tmp_path / "r"), *common]) == 2
    assert "unknown protocol 'qat_lsd'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "r").exists()


# --- the leaderboard -----------------------------------------------------------------------

class _Run:
    """The fields of a RunRecord the leaderboard reads."""

    def __init__(self, run_id, top1, correct, key="k"):
        self.run_id, self.accuracy = run_id, {"top1": top1, "test_images": len(correct)}
        self.extra = {"test_correct": encode_correct(np.asarray(correct, bool))}
        self.key = key


def test_a_cell_s_interval_is_student_t_over_seeds():
    cell = Cell("b", "a", "p", {0: _Run("r0", 80.0, [1]), 1: _Run("r1", 82.0, [1]),
                                2: _Run("r2", 84.0, [1])})
    iv = cell.interval()
    assert iv.estimate == pytest.approx(82.0)
    assert iv.half_width == pytest.approx(t_975(2) * 2.0 / np.sqrt(3))
    one = Cell("b", "a", "p", {0: _Run("r0", 50.0, [1, 0] * 50)})
    assert one.interval().half_width == pytest.approx(1.96 * 100 * np.sqrt(0.25 / 100), rel=1e-3)


def test_a_paired_difference_uses_the_same_seed_and_images():
    rng = np.random.default_rng(0)
    a_hits = rng.random((2, 400)) < 0.8
    b_hits = a_hits.copy()
    b_hits[:, :40] = False  # B misses 40 images that A gets right, in both seeds
    a_hits[:, :40] = True
    a = Cell("b", "a", "p", {s: _Run(f"a{s}", 100 * a_hits[s].mean(), a_hits[s]) for s in (0, 1)})
    b = Cell("b", "u", "p", {s: _Run(f"b{s}", 100 * b_hits[s].mean(), b_hits[s]) for s in (0, 1)})
    iv = paired_difference(a, b)
    assert iv.estimate == pytest.approx(10.0)  # 40 of 400 images
    assert iv.low > 0 and iv.excludes_zero()
    assert paired_difference(a, Cell("b", "x", "p", {5: a.runs[0]})) is None  # no shared seed


def test_leaderboard_from_a_grid_folder(tmp_path):
    ctx = _context(tmp_path)
    ctx.evaluate_fp()
    root = tmp_path / "grid"
    for allocator in ("uniform", "first_order"):
        path = root / "allocations" / f"{allocator}-toy.json"
        allocate(ctx, allocator, path)
        evaluate_cells(ctx, allocator, "ptq-nearest", path,
                       root / "runs" / f"{allocator}-ptq-nearest-toy")
    grid = load_grid(root)
    assert grid.cell("W4A4eq", "first_order", "ptq-nearest").status == "cannot serve"
    assert len(grid.cell("size8x", "uniform", "ptq-nearest").runs) == 2
    text = write_leaderboard(tmp_path / "lb.md", grid, ["uniform", "first_order"])
    assert "### size8x" in text and "### W4A4eq" in text and "n/a (weight-only)" in text
    top = {a: grid.cell("size8x", a, "ptq-nearest").interval().estimate
           for a in ("uniform", "first_order")}
    best = max(top, key=top.get)
    assert f"| {best} |" in text and f"**{top[best]:.2f}" in text
    compact = compact_table(grid).splitlines()
    assert compact[0] == "| allocator | size8x ptq-nearest | W4A4eq ptq-nearest |"
    (fo_row,) = [line for line in compact if line.startswith("| first_order |")]
    assert fo_row.endswith("| n/a |")  # weight-only at a BitOps budget: marked, not blank
    # two configurations in one cell are refused, not averaged
    records = root / "runs" / "uniform-ptq-nearest-toy"
    path = records / "grid-toy-uniform-size8x-nearest-s1.json"
    doc = json.loads(path.read_text())
    doc["extra"]["ptq"]["calib_images"] = 999
    path.write_text(json.dumps(doc))
    with pytest.raises(MpqbenchError, match="mixes 2 configurations"):
        load_grid(root)
    # a folder an interrupted evaluate stage left (records, no cells.jsonl) is an error that
    # names it, never a blank cell
    path.unlink()
    (records / "cells.jsonl").unlink()
    with pytest.raises(MpqbenchError, match=r"uniform-ptq-nearest-toy is incomplete: it holds 3 "
                                            r"records but no cells.jsonl"):
        load_grid(root)


def test_the_readme_leaderboard_is_the_one_the_committed_grid_gives(tmp_path):
    """README's leaderboard is generated (`mpqbench report --readme README.md`)."""
    repo = Path(__file__).resolve().parents[1]
    copy = tmp_path / "README.md"
    copy.write_text((repo / "README.md").read_text())
    assert update_readme(copy, load_grid(repo / "results" / "grid")) is False, (
        "README.md is stale: run `python -m mpqbench report --readme README.md`")
    copy.write_text("no block")
    with pytest.raises(MpqbenchError, match="leaderboard:start"):
        update_readme(copy, load_grid(repo / "results" / "grid"))
    # the front door stays short (issue 17): the reference lives in docs/
    assert (repo / "README.md").stat().st_size <= 10 * 1024


def test_the_shipped_grid_names_registered_allocators_and_every_protocol_it_evaluates():
    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert set(params["grid"]["allocators"]) <= set(ALLOCATORS.names())
    matrix = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["evaluate"]["matrix"]
    assert set(matrix["protocol"]) == set(params["grid"]["cells"])
    assert matrix["allocator"] == "${grid.allocators}"


def _cell(budget, allocator, protocol, hits_by_seed):
    return Cell(budget, allocator, protocol, {
        s: _Run(f"{allocator}-{protocol}-{s}", 100 * np.mean(h), h)
        for s, h in hits_by_seed.items()})


def test_each_claim_is_judged_on_paired_cells():
    rng = np.random.default_rng(1)
    base = {s: rng.random(500) < 0.7 for s in (0, 1, 2)}
    better = {s: h | (np.arange(500) < 100) for s, h in base.items()}  # ~+6 points
    worse = {s: h & (np.arange(500) >= 100) for s, h in base.items()}  # ~-14 points
    cells = [_cell("size8x", "first_order", "ptq-nearest", better),
             _cell("size8x", "hessian_trace", "ptq-nearest", base),
             _cell("size8x", "fisher_fit", "ptq-nearest", base),
             _cell("W4A4eq", "limpq", "qat_lsq", worse),
             _cell("W4A4eq", "uniform", "qat_lsq", base),
             _cell("W4A4eq", "limpq", "qat_saq", worse),
             _cell("W3A3eq", "limpq", "qat_lsq", {0: worse[0]}),
             _cell("W3A3eq", "uniform", "qat_lsq", {0: base[0]})]
    grid = Grid({(c.budget, c.allocator, c.protocol): c for c in cells}, {},
                ["size8x", "W4A4eq", "W3A3eq"], ["first_order", "hessian_trace", "fisher_fit",
                                                 "limpq", "uniform"],
                ["ptq-nearest", "qat_lsq", "qat_saq"],
                {"size8x": "size", "W4A4eq": "bitops", "W3A3eq": "bitops"})
    rows = {line.split(" | ")[0].lstrip("| ") + " @ " + line.split(" | ")[1]: line
            for line in grid_verdicts(grid)[2:]}
    assert rows["first-order sensitivity (Chauhan et al. 2023) beats the Hessian trace @ "
                "size8x, ptq-nearest"].endswith("| reproduced |")
    # 3 seeds a side: a QAT claim is judged by its interval over seeds and images
    assert rows["LIMPQ's policy beats uniform at the same budget @ W4A4eq, "
                "qat_lsq"].endswith("| not reproduced |")
    saq = rows["SAQ (qat_saq) beats plain QAT (qat_lsq) on the same policy @ W4A4eq, limpq's "
               "policy"]
    assert "+0.00 [+0.00, +0.00]" in saq and saq.endswith("| inconclusive |")
    # one training seed a side: ~14 points apart, and still not a verdict
    one_seed = rows["LIMPQ's policy beats uniform at the same budget @ W3A3eq, qat_lsq"]
    assert "| 1 | -" in one_seed and one_seed.endswith("| inconclusive (one training seed) |")
    assert len(rows) == 5  # no row without both sides (no task_loss or zeroq_kl cells)
    # each seed's own difference is shown beside the pooled one
    limpq = rows["LIMPQ's policy beats uniform at the same budget @ W4A4eq, qat_lsq"]
    each = [float(v) for v in limpq.split(" | ")[4].split(", ")]
    assert each == pytest.approx([100 * (worse[s].mean() - base[s].mean()) for s in (0, 1, 2)],
                                 abs=0.006)


def test_a_verdict_needs_every_seed_on_its_side_of_zero():
    """Four seeds ~6 points up and one ~0.7 points down: the pooled bootstrap excludes zero,
    but one seed the other way makes the claim inconclusive, not reproduced."""
    rng = np.random.default_rng(2)
    base = {s: rng.random(2000) < 0.7 for s in range(5)}
    up = {s: h | (np.arange(2000) < 400) for s, h in base.items()}
    up[4] = base[4] & (np.arange(2000) >= 20)  # about -0.7 points
    cells = [_cell("size8x", "task_loss", "ptq-nearest", up),
             _cell("size8x", "zeroq_kl", "ptq-nearest", base)]
    grid = Grid({(c.budget, c.allocator, c.protocol): c for c in cells}, {}, ["size8x"],
                ["task_loss", "zeroq_kl"], ["ptq-nearest"], {"size8x": "size"})
    header, _, row = grid_verdicts(grid)
    assert "each seed" in header
    pooled = paired_difference(cells[0], cells[1])
    assert pooled.low > 0  # the pooled interval alone would say reproduced
    each = [float(v) for v in row.split(" | ")[4].split(", ")]
    assert len(each) == 5 and sum(d < 0 for d in each) == 1
    assert row.endswith("| inconclusive (seeds disagree) |")
