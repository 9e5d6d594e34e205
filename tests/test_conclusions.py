from pathlib import Path

import pytest

from mpqbench.conclusions import (
    GLANCE_END,
    GLANCE_START,
    claim_verdicts,
    glance_table,
    update_block,
    write_conclusions,
)
from mpqbench.results import RunRecord, load_runs


def _record(run_id, top1, method="saq", metric=None, extra=None, protocol="qat_lsq"):
    return RunRecord(run_id=run_id, method=method, model="m", dataset="d", dataset_variant="d",
                     protocol=protocol, metric=metric,
                     accuracy={"top1": top1, "test_images": 10_000}, extra=extra or {})


def test_pairs_are_found_by_run_id_and_judged():
    records = [
        _record("saq-m-W4A4-qat_saq", 84.0), _record("saq-m-W4A4-qat_lsq", 80.0),
        _record("saq-m-W3A3-qat_saq", 70.0),  # no baseline: no verdict
        _record("limpq-m-W4A4eq-qat_lsq", 70.0, "limpq"),
        _record("limpq-m-uniform-W4A4-qat_lsq", 80.0, "limpq"),
        _record("first_order_ptq-m-first_order-ratio8-nearest", 86.2, "first_order_ptq",
                "first_order", protocol="ptq-nearest"),
        _record("first_order_ptq-m-hessian_trace-ratio8-nearest", 86.0, "first_order_ptq",
                "hessian_trace", protocol="ptq-nearest"),
        _record("first_order_ptq-m-first_order-ratio10-nearest", 80.0, "first_order_ptq",
                "first_order", protocol="ptq-nearest"),
        _record("first_order_ptq-m-hessian_trace-ratio10-nearest", 70.0, "first_order_ptq",
                "hessian_trace", protocol="ptq-nearest"),
    ]
    verdicts = {v.claim: v for _, v in claim_verdicts(records)}
    assert set(verdicts) == {"SAQ beats plain QAT (W4A4)",
                             "LIMPQ beats uniform at W4A4-equivalent BitOps",
                             "first-order sensitivity beats hessian_trace at ratio8",
                             "first-order sensitivity beats hessian_trace at ratio10"}
    # one training seed a side: 4 and 10 points apart, far outside the test-sampling interval,
    # and still inconclusive (training noise is not in that interval)
    saq = verdicts["SAQ beats plain QAT (W4A4)"]
    assert saq.half_width < 1.5 and saq.outcome == "inconclusive (one training seed)"
    assert verdicts["LIMPQ beats uniform at W4A4-equivalent BitOps"].outcome == \
        "inconclusive (one training seed)"
    # PTQ pairs: test sampling is their noise; judged by the interval
    assert verdicts["first-order sensitivity beats hessian_trace at ratio8"].outcome == \
        "inconclusive"
    assert verdicts["first-order sensitivity beats hessian_trace at ratio10"].outcome == \
        "reproduced"


def test_written_markdown_has_every_verdict(tmp_path):
    records = [_record("saq-m-W4A4-qat_saq", 84.0), _record("saq-m-W4A4-qat_lsq", 80.0),
               _record("data_free-m-x", 1.0, "data_free", extra={"metric_quality": {
                   "tables": {"t": {"spearman": 0.8, "kendall": 0.6}}}})]
    text = write_conclusions(records, tmp_path / "c.md")
    assert ("SAQ beats plain QAT (W4A4): inconclusive (one training seed) "
            "(saq-m-W4A4-qat_saq 84.00") in text
    assert "`t`: Spearman 0.800, Kendall 0.600" in text
    assert (tmp_path / "c.md").read_text() == text
    assert "No pair" in write_conclusions([], tmp_path / "e.md")


def test_identical_policies_are_called_out():
    from mpqbench.conclusions import identical_policies

    policy = {"layers": {"a": {"w_bits": 4, "a_bits": 8}}}
    other = {"layers": {"a": {"w_bits": 3, "a_bits": 8}}}
    records = []
    for metric, pol in (("first_order", policy), ("fisher_fit", policy), ("hessian", other)):
        r = _record(f"x-{metric}", 86.0, "first_order_ptq", metric)
        r.policy, r.budget = pol, {"compression_ratio": 8}
        records.append(r)
    lines = identical_policies(records)
    assert len(lines) == 1 and "`first_order` and `fisher_fit` chose the same policy" in lines[0]


def test_the_readme_table_is_the_one_the_committed_records_give():
    """README's results at a glance are generated (`mpqbench report --readme README.md`)."""
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = readme.split(GLANCE_START, 1)[1].split(GLANCE_END, 1)[0]
    assert block.strip() == glance_table(load_runs(repo / "results/runs")).strip(), (
        "README.md is stale: run `python -m mpqbench report --readme README.md`")


def test_a_glance_block_is_replaced_and_a_file_without_one_is_an_error(tmp_path):
    path = tmp_path / "R.md"
    path.write_text(f"a\n{GLANCE_START}\nold\n{GLANCE_END}\nb\n")
    assert update_block(path, "new\n") is True
    assert path.read_text() == f"a\n{GLANCE_START}\nnew\n{GLANCE_END}\nb\n"
    assert update_block(path, "new\n") is False
    path.write_text("no block")
    with pytest.raises(ValueError, match="glance:start"):
        update_block(path, "x")
