"""Each method's claim, judged from the RunRecords alone (the report's conclusions).

Every verdict pairs two runs of the same model, budget or width, schedule and seed, on the
same test images (``verdict.Verdict``); pairs are found by run id, as the method notebooks
name their runs. ``write_conclusions`` writes them as Markdown (``results/conclusions.md``),
which the README links to instead of copying numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from mpqbench.comparison import budget_title
from mpqbench.intervals import Interval, paired_bootstrap
from mpqbench.results import RunRecord, decode_correct
from mpqbench.verdict import OneSeedTrainingVerdict, Verdict

# (method, run-id pattern of the method's side, baseline run ids, claim)
CLAIMS: list[tuple[str, str, list[str], str]] = [
    ("saq", r"saq-(?P<model>.+)-(?P<cfg>W\d+A\d+|mixed)-qat_saq",
     ["saq-{model}-{cfg}-qat_lsq"], "SAQ beats plain QAT ({cfg})"),
    ("limpq", r"limpq-(?P<model>.+)-(?P<cfg>W\d+A\d+)eq-qat_lsq",
     ["limpq-{model}-uniform-{cfg}-qat_lsq"],
     "LIMPQ beats uniform at {cfg}-equivalent BitOps"),
    ("first_order_ptq", r"first_order_ptq-(?P<model>.+)-first_order-(?P<budget>.+)-(?P<r>\w+)",
     ["first_order_ptq-{model}-hessian_trace-{budget}-{r}",
      "first_order_ptq-{model}-fisher_fit-{budget}-{r}"],
     "first-order sensitivity beats {baseline} at {budget}"),
    ("data_free", r"data_free-(?P<model>.+)-task_loss-low-synthetic-(?P<budget>.+)-(?P<r>\w+)",
     ["data_free-{model}-zeroq_kl-zeroq-{budget}-{r}"],
     "task loss on labeled synthetic data beats ZeroQ at {budget}"),
]


def _trained(record: RunRecord) -> bool:
    return (record.protocol or "").startswith("qat")


def _metric_of(run_id: str, record: RunRecord | None) -> str:
    return (record.metric or record.protocol) if record is not None else run_id


def _paired(record: RunRecord, base: RunRecord) -> Interval | None:
    """The paired bootstrap interval of top-1(record) - top-1(base) when both keep their
    per-image hits on the same images (``extra.test_correct``), else None."""
    a, b = (r.extra.get("test_correct") for r in (record, base))
    if not a or not b or a["images"] != b["images"]:
        return None
    return paired_bootstrap(decode_correct(a)[None], decode_correct(b)[None])


def claim_pairs(records: Iterable[RunRecord]
                ) -> list[tuple[str, Verdict, RunRecord, RunRecord]]:
    """(method, verdict, the method's record, the baseline's record) for every pair of runs
    that a claim names and that both exist."""
    by_id = {r.run_id: r for r in records}
    out = []
    for method, pattern, baselines, claim in CLAIMS:
        for run_id in sorted(by_id):
            match = re.fullmatch(pattern, run_id)
            if match is None:
                continue
            record = by_id[run_id]
            for template in baselines:
                base = by_id.get(template.format(**match.groupdict()))
                if base is None:
                    continue
                label = _metric_of(base.run_id, base)
                kind = OneSeedTrainingVerdict if _trained(record) or _trained(base) else Verdict
                out.append((method, kind(
                    claim.format(baseline=label, **match.groupdict()), run_id, base.run_id,
                    float(record.accuracy["top1"]), float(base.accuracy["top1"]),
                    int(record.accuracy.get("test_images", 0)), interval=_paired(record, base)),
                    record, base))
    return out


def claim_verdicts(records: Iterable[RunRecord]) -> list[tuple[str, Verdict]]:
    """(method, verdict) for every pair of runs that a claim names and that both exist."""
    return [(method, verdict) for method, verdict, _, _ in claim_pairs(records)]


def ranking_lines(records: Iterable[RunRecord]) -> list[str]:
    """The data-free notebook's rank correlations with the policy bank (Spearman), once."""
    for record in records:
        quality = record.extra.get("metric_quality") if record.method == "data_free" else None
        if quality:
            tables = quality["tables"]
            return [f"- `{name}`: Spearman {row['spearman']:.3f}, Kendall {row['kendall']:.3f}"
                    for name, row in tables.items()]
    return []


def identical_policies(records: Iterable[RunRecord]) -> list[str]:
    """Allocators that chose the very same policy at the same budget and protocol: they are
    near-duplicates there, not independent baselines (e.g. first_order and fisher_fit)."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.metric and r.policy and r.budget:
            key = (r.method, r.model, json.dumps(r.budget, sort_keys=True), r.protocol)
            groups.setdefault(key, []).append(r)
    lines = []
    for (method, model, budget, protocol), group in groups.items():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.metric != b.metric and a.policy == b.policy:
                    lines.append(f"- {method}, {model}, budget {budget}, {protocol}: "
                                 f"`{a.metric}` and `{b.metric}` chose the same policy (top-1 "
                                 f"{a.accuracy['top1']:.2f}): not independent evidence there")
    return lines


GLANCE_START, GLANCE_END = "<!-- glance:start -->", "<!-- glance:end -->"
_CLAIM_TEXT = {"saq": "SAQ vs plain QAT", "limpq": "LIMPQ vs uniform, same BitOps",
               "data_free": "task loss (labeled synthetic) vs ZeroQ"}


def glance_table(records: list[RunRecord]) -> str:
    """Every claim's verdict as one Markdown table row (the README's results at a glance):
    the claim, its budget as a reader says it, both top-1 values (%), the difference with its
    95% interval (points) and the outcome."""
    lines = ["| claim | budget | method top-1 | baseline top-1 | difference | verdict |",
             "|---|---|---|---|---|---|"]
    for method, v, record, base in claim_pairs(records):
        claim = _CLAIM_TEXT.get(method, method)
        if method == "first_order_ptq":
            claim = f"first-order vs {base.metric}"
        setting = budget_title(record.budget, record.extra)
        if record.policy and record.solver != "uniform" and method == "saq":
            setting = f"mixed policy at {setting}"
        spread = (f"[{v.interval.low:+.2f}, {v.interval.high:+.2f}]" if v.interval is not None
                  else f"+- {v.half_width:.2f}")
        lines.append(f"| {claim} | {setting} | {v.method_top1:.2f} | {v.baseline_top1:.2f} "
                     f"| {v.difference:+.2f} {spread} | {v.outcome} |")
    return "\n".join(lines) + "\n"


def write_glance(records: list[RunRecord], path: str | Path) -> str:
    """``glance_table`` to ``path`` (``results/glance.md``); returns the table."""
    text = glance_table(records)
    Path(path).write_text(text)
    return text


def update_block(path: str | Path, text: str, start: str = GLANCE_START,
                 end: str = GLANCE_END) -> bool:
    """Replace what lies between the ``start`` and ``end`` markers (default: the glance
    block) in ``path`` with ``text``; True when the file changed. A file without both markers
    is an error naming them."""
    path = Path(path)
    old = path.read_text()
    if start not in old or end not in old:
        raise ValueError(f"{path} has no {start} ... {end} block")
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{text}{end}{tail}"
    if new != old:
        path.write_text(new)
    return new != old


def write_conclusions(records: list[RunRecord], path: str | Path) -> str:
    """Markdown with every claim's verdict and the data-free ranking table; returns it."""
    lines = ["# Conclusions, generated from the RunRecords", "",
             "Each line compares two runs with the same schedule and seed on the same test "
             "images; the interval is the 95% interval of the difference: a paired bootstrap "
             "over the test images where both runs kept their per-image hits, else the "
             "test-sampling interval of two independent proportions (one seed: run-to-run "
             "noise is not in it). `reproduced` / `not reproduced` only when the interval lies "
             "above / below zero, `inconclusive` otherwise. A pair of trained (QAT) runs of "
             "one seed each is `inconclusive (one training seed)` whatever its interval: "
             "training noise is not in it, and it is larger (`OneSeedTrainingVerdict`); the "
             "grid's multi-seed QAT cells judge those claims.", ""]
    verdicts = claim_verdicts(records)
    for method in dict.fromkeys(m for m, _ in verdicts):
        lines += [f"## {method}", ""]
        lines += [f"- {v.text()}" for m, v in verdicts if m == method]
        lines.append("")
    same = identical_policies(records)
    if same:
        lines += ["## Allocators that agree exactly", ""] + same + [""]
    ranking = ranking_lines(records)
    if ranking:
        lines += ["## data_free: how well each table ranks the policy bank's measured drops", ""]
        lines += ranking + [""]
    if not verdicts:
        lines += ["No pair of runs that a claim names was found.", ""]
    text = "\n".join(lines)
    Path(path).write_text(text)
    return text
