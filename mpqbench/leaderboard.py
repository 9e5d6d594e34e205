"""The comparison grid's leaderboard (issue 16), from its records and cell lists alone.

For each shared budget: allocators as rows, protocols as columns, each cell the mean top-1
(%) over its seeds with a 95% interval, the best of each column in bold, and the allocator's
own cost (seconds) beside it. Cells that hold no run say why (``cut`` on this profile,
``not applicable`` outside the protocol's ``only`` list, ``cannot serve`` a BitOps budget
with a weight-only metric, ``infeasible``). Then, per cell,
the paired difference against uniform and against the best other allocator of the same
column: a paired bootstrap over seeds and test images (``intervals.paired_bootstrap``, the
same seed on both sides), marked distinguishable when its interval excludes 0.

Records of one cell must share one configuration (``comparison.config_key``): two settings
are never averaged; a cell that mixes them is an error naming the runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpqbench.comparison import config_key
from mpqbench.conclusions import update_block
from mpqbench.errors import MpqbenchError
from mpqbench.intervals import Interval, paired_bootstrap, sampling_interval, seed_interval
from mpqbench.results import RunRecord, decode_correct, load_runs
from mpqbench.verdict import ONE_TRAINING_SEED

LEADERBOARD_START, LEADERBOARD_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
MARKS = {"cut": "cut", "cannot serve": "n/a (weight-only)", "infeasible": "infeasible",
         "not applicable": "n/a (not in the design)"}


@dataclass
class Cell:
    """One (budget, allocator, protocol): its records by seed, or why it has none."""

    budget: str
    allocator: str
    protocol: str
    runs: dict[int, RunRecord] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""

    @property
    def top1(self) -> list[float]:
        return [self.runs[s].accuracy["top1"] for s in sorted(self.runs)]

    def interval(self) -> Interval | None:
        """Mean top-1 with Student's t over seeds (2 or more), else the test-sampling
        interval of the one run."""
        if not self.runs:
            return None
        if len(self.runs) >= 2:
            return seed_interval(self.top1)
        (run,) = self.runs.values()
        return sampling_interval(run.accuracy["top1"], int(run.accuracy["test_images"]))

    def correct(self, seeds: list[int]) -> np.ndarray | None:
        """(seeds, images) per-image hits at ``seeds``, or None when a run lacks them."""
        rows = []
        for seed in seeds:
            stored = self.runs[seed].extra.get("test_correct")
            if not stored:
                return None
            rows.append(decode_correct(stored))
        return np.stack(rows)


def paired_difference(a: Cell, b: Cell) -> Interval | None:
    """top-1(a) - top-1(b) over the seeds both ran, paired by seed and test image."""
    seeds = sorted(set(a.runs) & set(b.runs))
    if not seeds:
        return None
    ca, cb = a.correct(seeds), b.correct(seeds)
    if ca is None or cb is None or ca.shape != cb.shape:
        return None
    return paired_bootstrap(ca, cb)


@dataclass
class Grid:
    """Every cell of the grid, the allocators' seconds, and the orders to show them in."""

    cells: dict[tuple[str, str, str], Cell]
    allocator_seconds: dict[str, float]
    budgets: list[str]
    allocators: list[str]
    protocols: list[str]
    budget_kinds: dict[str, str]
    uniform_configs: dict[str, str] = field(default_factory=dict)

    def cell(self, budget: str, allocator: str, protocol: str) -> Cell | None:
        return self.cells.get((budget, allocator, protocol))


def load_grid(root: str | Path = "results/grid") -> Grid:
    """The records and ``cells.jsonl`` of every ``runs/<allocator>-<protocol>-<model>`` folder
    and the allocations' seconds under ``root``."""
    root = Path(root)
    cells: dict[tuple[str, str, str], Cell] = {}
    for folder in sorted(p for p in root.glob("runs/*") if p.is_dir()):
        if not (folder / "cells.jsonl").is_file():  # an evaluate stage that did not finish
            raise MpqbenchError(
                f"{folder} is incomplete: it holds {len(list(folder.glob('*.json')))} records "
                f"but no cells.jsonl (its evaluate stage was interrupted); re-run it (dvc "
                f"repro -s evaluate@{folder.name}) or restore the committed folder (git "
                f"checkout -- {folder})")
    for listing in sorted(root.glob("runs/*/cells.jsonl")):
        records = {r.run_id: r for r in load_runs(listing.parent)}
        for entry in map(json.loads, listing.read_text().splitlines()):
            key = (entry["budget"], entry["allocator"], entry["protocol"])
            cell = cells.setdefault(key, Cell(*key))
            if entry["status"] != "ok":
                cell.status, cell.reason = entry["status"], entry.get("reason", "")
                continue
            if entry["run_id"] not in records:
                raise MpqbenchError(f"{listing} lists run {entry['run_id']} but its record is "
                                    "missing; re-run that evaluate stage")
            cell.runs[int(entry["seed"])] = records[entry["run_id"]]
    for cell in cells.values():
        keys = {config_key(r) for r in cell.runs.values()}
        if len(keys) > 1:
            raise MpqbenchError(f"grid cell {cell.budget} / {cell.allocator} / {cell.protocol} "
                                f"mixes {len(keys)} configurations (runs "
                                f"{sorted(r.run_id for r in cell.runs.values())}); re-run its "
                                "evaluate stage so that only seeds differ")
    seconds, kinds, tightness, allocators, uniform = {}, {}, {}, [], {}
    for path in sorted(root.glob("allocations/*.json")):
        doc = json.loads(path.read_text())
        # its own seconds, or the training it reuses (LIMPQ's indicators, from its stage)
        reused = [e["allocation"]["seconds"].get("sensitivity_s", 0.0)
                  for e in doc["budgets"].values() if e["status"] == "ok"]
        seconds[doc["allocator"]] = max([float(doc["seconds"]), *reused])
        allocators.append(doc["allocator"])
        for name, entry in doc["budgets"].items():
            kinds[name] = "bitops" if any(k.startswith("bitops") for k in entry["budget"]) \
                else "size"
            tightness[name] = _tightness(entry["budget"])
            if doc["allocator"] == "uniform" and entry["status"] == "ok":
                uniform[name] = entry["allocation"]["extra"].get("config", "")
    budgets = sorted(tightness, key=lambda name: (kinds[name] == "bitops", tightness[name]))
    protocols = list(dict.fromkeys(key[2] for key in cells))
    return Grid(cells, seconds, budgets, allocators, protocols, kinds, uniform)


def _tightness(budget: dict[str, Any]) -> float:
    """Orders budgets loosest first: a larger compression ratio or size bound, or fewer
    equivalent bits, is tighter."""
    if "compression_ratio" in budget:
        return float(budget["compression_ratio"])
    if "bitops_equiv" in budget:
        w, a = budget["bitops_equiv"]
        return -float(w * a)
    return -float(next(iter(budget.values())))


def uniform_note(grid: Grid) -> str:
    """Which uniform width the ``uniform`` row holds at each budget."""
    if not grid.uniform_configs:
        return ""
    parts = [f"{name} {grid.uniform_configs[name]}" for name in grid.budgets
             if name in grid.uniform_configs]
    return ("`uniform` is the widest uniform width within each budget (first and last layers "
            "at W8A8 count in the budget): " + ", ".join(parts) + ".\n")


def _order(names: list[str], preferred: list[str] | None) -> list[str]:
    if not preferred:
        return names
    return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def _cell_text(cell: Cell | None, best: bool) -> str:
    if cell is None:
        return "not run"
    if not cell.runs:
        return MARKS.get(cell.status, cell.status)
    iv = cell.interval()
    text = f"{iv.estimate:.2f} ± {iv.half_width:.2f} ({len(cell.runs)})"
    return f"**{text}**" if best else text


def _diff_text(iv: Interval | None) -> str:
    if iv is None:
        return "–"
    mark = "yes" if iv.excludes_zero() else "no"
    return f"{iv.estimate:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] {mark}"


def budget_tables(grid: Grid, budget: str, allocators: list[str], protocols: list[str]
                  ) -> list[str]:
    """The Markdown of one budget: the top-1 table, then the paired differences."""
    best: dict[str, set[str]] = {}
    for protocol in protocols:
        ran = [(grid.cell(budget, a, protocol), a) for a in allocators]
        ran = [(c.interval().estimate, a) for c, a in ran if c is not None and c.runs]
        best[protocol] = {a for e, a in ran if e == max(ran)[0]}  # ties: all in bold
    lines = ["| allocator | allocator s | " + " | ".join(protocols) + " |",
             "|---|---:|" + "---|" * len(protocols)]
    for a in allocators:
        cells = [_cell_text(grid.cell(budget, a, p), a in best[p]) for p in protocols]
        seconds = grid.allocator_seconds.get(a)
        lines.append(f"| {a} | {'' if seconds is None else f'{seconds:.0f}'} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Paired differences (points, 95% interval, distinguishable from noise?): "
              "against uniform, and against the best other allocator of the column.", "",
              "| allocator | protocol | vs uniform | vs best other |", "|---|---|---|---|"]
    for p in protocols:
        for a in allocators:
            cell = grid.cell(budget, a, p)
            if cell is None or not cell.runs:
                continue
            uniform = grid.cell(budget, "uniform", p)
            others = [(grid.cell(budget, o, p), o) for o in allocators if o != a]
            others = [(c.interval().estimate, o, c) for c, o in others if c is not None and c.runs]
            vs_uniform = (paired_difference(cell, uniform)
                          if a != "uniform" and uniform is not None and uniform.runs else None)
            vs_best = paired_difference(cell, max(others, key=lambda t: t[0])[2]) \
                if others else None
            best_name = f" ({max(others, key=lambda t: t[0])[1]})" if others else ""
            lines.append(f"| {a} | {p} | {_diff_text(vs_uniform)} | "
                         f"{_diff_text(vs_best)}{best_name} |")
    return lines


SHOWN_FIRST = ["uniform", "random"]  # the baselines, then the allocators by name
PROTOCOL_ORDER = ["ptq-nearest", "ptq-adaround", "qat_lsq", "qat_saq"]


def leaderboard_markdown(grid: Grid, allocators: list[str] | None = None,
                         protocols: list[str] | None = None) -> str:
    """The leaderboard: one section per budget family (size, then BitOps), one table pair per
    budget. ``allocators`` / ``protocols``: the order to show (default: the baselines first,
    PTQ before QAT)."""
    allocators = _order(sorted(grid.allocators), allocators or SHOWN_FIRST)
    protocols = _order(grid.protocols, protocols or PROTOCOL_ORDER)
    if not grid.cells:
        return "The grid has no cells yet: run `dvc repro evaluate`.\n"
    lines = ["Each cell: mean test top-1 (%) ± the half-width of its 95% interval (seeds run): "
             "Student's t over seeds where there are 2 or more, else the test-sampling interval "
             "of the one run. Bold: the best of the column. `cut`: left out on this profile "
             "(params.yaml grid.cells.<protocol>.cut); `n/a (not in the design)`: the budget "
             "is kept to other allocators under this protocol (grid.cells.<protocol>.only: "
             "QAT at size8x is for LIMPQ against uniform); `n/a (weight-only)`: a weight-only "
             "metric cannot serve a BitOps budget; `infeasible`: no policy of the "
             "allocator's widths meets the budget; `not run`: no evaluate stage for it. "
             "`allocator s`: the "
             "allocator's own seconds, once per model, shared by its budgets (LIMPQ: its "
             "indicator training in the limpq stage, which the grid reuses).", "",
             uniform_note(grid)]
    for family, title in (("size", "Weight-size budgets (activations at 8 bits)"),
                          ("bitops", "BitOps budgets (weights and activations searched)")):
        names = [b for b in grid.budgets if grid.budget_kinds.get(b) == family]
        if not names:
            continue
        lines += [f"## {title}", ""]
        for budget in names:
            shown = [p for p in protocols if any(grid.cell(budget, a, p) is not None
                                                 for a in allocators)]
            if not shown:
                continue
            lines += [f"### {budget}", ""] + budget_tables(grid, budget, allocators, shown) + [""]
    lines += ["## Each paper's claim on the grid", "",
              "The paired difference (a paired bootstrap over seeds and test images) of the "
              "claim's side minus its baseline in the same cell, and each seed's own "
              "difference; `reproduced` / `not reproduced` only when its 95% interval lies "
              "above / below zero and every seed's difference has that sign (with 2 seeds the "
              "bootstrap's draw over seeds is coarse; Student's t over the 2 per-seed "
              "differences would be far wider). A QAT claim needs 2 or more seeds a side.",
              "",
              *grid_verdicts(grid), ""]
    return "\n".join(lines) + "\n"


# (claim, allocator, baseline allocator, protocols, budget kind, protocol baseline): each
# paper's claim as pairs of grid cells; SAQ compares protocols on one allocator's policies
CLAIMS = [
    ("first-order sensitivity (Chauhan et al. 2023) beats the Hessian trace", "first_order",
     "hessian_trace", ["ptq-nearest", "ptq-adaround"], "size"),
    ("first-order sensitivity (Chauhan et al. 2023) beats the Fisher trace (FIT)",
     "first_order", "fisher_fit", ["ptq-nearest", "ptq-adaround"], "size"),
    ("task loss on labeled synthetic data (Lee et al. 2021) beats ZeroQ", "task_loss",
     "zeroq_kl", ["ptq-nearest", "ptq-adaround"], "size"),
    # QAT at every budget family the grid trains (BitOps, and size8x where `only` keeps it)
    ("LIMPQ's policy beats uniform at the same budget", "limpq", "uniform",
     ["qat_lsq", "qat_saq"], None),
]
SAQ_CLAIM = "SAQ (qat_saq) beats plain QAT (qat_lsq) on the same policy"


def _outcome(iv: Interval) -> str:
    if iv.low > 0:
        return "reproduced"
    if iv.high < 0:
        return "not reproduced"
    return "inconclusive"


SEEDS_DISAGREE = "inconclusive (seeds disagree)"


def _per_seed(a: Cell, b: Cell) -> list[float]:
    """top-1(a) - top-1(b) at each seed both ran (points), in seed order."""
    return [a.runs[s].accuracy["top1"] - b.runs[s].accuracy["top1"]
            for s in sorted(set(a.runs) & set(b.runs))]


def _verdict_line(claim: str, where: str, iv: Interval | None, per_seed: list[float],
                  trained: bool) -> str | None:
    """One verdict row. A trained (QAT) pair with one seed is inconclusive whatever its
    test-image interval (``verdict.OneSeedTrainingVerdict`` says why). With few seeds
    the bootstrap's draw over seeds is coarse (two seeds give three distinct draws), so a
    verdict also needs every seed's own difference on its side of zero: one seed the other
    way makes it ``inconclusive (seeds disagree)``."""
    if iv is None:
        return None
    if trained and len(per_seed) < 2:
        outcome = ONE_TRAINING_SEED
    else:
        outcome = _outcome(iv)
        side = 1.0 if iv.estimate > 0 else -1.0
        if outcome != "inconclusive" and any(d * side <= 0 for d in per_seed):
            outcome = SEEDS_DISAGREE
    each = ", ".join(f"{d:+.2f}" for d in per_seed)
    return (f"| {claim} | {where} | {len(per_seed)} | {iv.estimate:+.2f} [{iv.low:+.2f}, "
            f"{iv.high:+.2f}] | {each} | {outcome} |")


def grid_verdicts(grid: Grid) -> list[str]:
    """Each paper's claim judged on the grid's cells: a Markdown table, one row per budget
    and protocol where both sides ran; reproduced / not reproduced only when the paired
    interval excludes 0, every seed's own difference is on the same side and, for QAT, both
    sides have 2 or more seeds."""
    rows = []
    for claim, allocator, baseline, protocols, kind in CLAIMS:
        for budget in grid.budgets:
            if kind is not None and grid.budget_kinds.get(budget) != kind:
                continue
            for protocol in protocols:
                a, b = grid.cell(budget, allocator, protocol), grid.cell(budget, baseline,
                                                                          protocol)
                if a is None or b is None or not a.runs or not b.runs:
                    continue
                line = _verdict_line(claim, f"{budget}, {protocol}", paired_difference(a, b),
                                     _per_seed(a, b), protocol.startswith("qat"))
                rows += [line] if line else []
    for (budget, allocator, protocol), cell in sorted(grid.cells.items()):
        if protocol != "qat_saq" or not cell.runs:
            continue
        plain = grid.cell(budget, allocator, "qat_lsq")
        if plain is None or not plain.runs:
            continue
        line = _verdict_line(SAQ_CLAIM, f"{budget}, {allocator}'s policy",
                             paired_difference(cell, plain), _per_seed(cell, plain), True)
        rows += [line] if line else []
    if not rows:
        return ["No claim has both of its sides in the grid yet."]
    return ["| claim | where | seeds | difference (points, 95% interval) | each seed | verdict |",
            "|---|---|---:|---|---|---|", *rows]


def grid_frame_rows(grid: Grid) -> list[dict[str, Any]]:
    """One row per cell with runs: budget, allocator, protocol, seeds, mean, low, high."""
    rows = []
    for (budget, allocator, protocol), cell in sorted(grid.cells.items()):
        iv = cell.interval()
        if iv is None:
            continue
        costs = [run.cost for run in cell.runs.values()]
        rows.append({"budget": budget, "family": grid.budget_kinds.get(budget, "size"),
                     "allocator": allocator, "protocol": protocol, "seeds": len(cell.runs),
                     "top1": iv.estimate, "low": iv.low, "high": iv.high, "interval": iv.kind,
                     "size_mib": costs[0]["size_mib"], "bitops_g": costs[0]["bitops_g"]})
    return rows


def write_leaderboard(path: str | Path, grid: Grid, allocators: list[str] | None = None,
                      protocols: list[str] | None = None) -> str:
    """``leaderboard_markdown`` under a title, to ``path`` (``results/leaderboard.md``)."""
    text = "# Leaderboard: every allocator through every protocol at the shared budgets\n\n" \
        + leaderboard_markdown(grid, allocators, protocols)
    Path(path).write_text(text)
    return text


SHORT_MARKS = {"cut": "cut", "cannot serve": "n/a", "infeasible": "infeasible",
               "not applicable": "n/a"}


def compact_table(grid: Grid) -> str:
    """One table for the README: allocators as rows, every (budget, protocol) with a run as a
    column, each cell the mean top-1 and the half-width of its 95% interval, the best of each
    column in bold; ``n/a``: cannot serve (weight-only at BitOps) or outside the protocol's
    ``only`` list, ``cut``: not run on this profile, ``infeasible``."""
    allocators = _order(sorted(grid.allocators), SHOWN_FIRST)
    protocols = _order(grid.protocols, PROTOCOL_ORDER)
    columns = [(b, p) for kind in ("size", "bitops") for b in grid.budgets
               if grid.budget_kinds.get(b) == kind for p in protocols
               if any((c := grid.cell(b, a, p)) is not None and c.runs for a in allocators)]
    if not columns:
        return "The grid has no cells yet: run `dvc repro evaluate`.\n"
    best = {}
    for b, p in columns:
        ran = [(c.interval().estimate, a) for a in allocators
               if (c := grid.cell(b, a, p)) is not None and c.runs]
        best[(b, p)] = {a2 for e, a2 in ran if e == max(ran)[0]}  # ties: all in bold
    lines = ["| allocator | " + " | ".join(f"{b} {p}" for b, p in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for a in allocators:
        cells = []
        for b, p in columns:
            cell = grid.cell(b, a, p)
            if cell is None:
                cells.append("")
            elif not cell.runs:
                cells.append(SHORT_MARKS.get(cell.status, cell.status))
            else:
                iv = cell.interval()
                text = f"{iv.estimate:.2f} ± {iv.half_width:.2f}"
                cells.append(f"**{text}**" if a in best[(b, p)] else text)
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + uniform_note(grid)


def update_readme(path: str | Path, grid: Grid) -> bool:
    """Replace the leaderboard block of ``path`` (README.md) with ``compact_table`` (the
    tables by budget, paired differences and verdicts are in ``results/leaderboard.md``); True
    when the file changed. A file without both markers is an error naming them."""
    try:
        return update_block(path, compact_table(grid), LEADERBOARD_START, LEADERBOARD_END)
    except ValueError as exc:
        raise MpqbenchError(str(exc)) from None
