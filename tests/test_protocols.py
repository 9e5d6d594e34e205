"""The Context -> Allocation -> protocol -> RunRecord path, tested for every registered protocol.

A protocol added to ``PROTOCOLS`` is tested here without editing this file.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from mpqbench.context import EvalConfig, Profile, build_context, context_for
from mpqbench.cost import Budget, cost_summary
from mpqbench.data import Splits, TensorSplit
from mpqbench.errors import MpqbenchError
from mpqbench.mixed import sweep, uniform_references
from mpqbench.naming import budget_label, protocol_tag, run_id
from mpqbench.protocols import PROTOCOLS, PtqProtocol, run_policy, uniform_allocation
from mpqbench.ptq import PtqConfig
from mpqbench.results import decode_correct, load_runs
from mpqbench.sensitivity import compute

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _split(n: int, seed: int) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    return TensorSplit(torch.randint(0, 256, (n, 8, 8, 3), generator=g, dtype=torch.uint8),
                       torch.randint(0, 3, (n,), generator=g), MEAN, STD)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()


def _context(tmp_path=None, seed: int = 0):
    profile = Profile(
        "t", seed, "toy", "cpu", EvalConfig(16),
        PtqConfig(calib_images=16, batch_size=8, adaround_iters=3, adaround_batch_size=4),
        {"fix_first_last": True, "seed": seed,
         "qat": {"epochs": 1, "max_batches_per_epoch": 2, "batch_size": 8, "lr": 0.01}})
    splits = Splits(_split(32, 1), _split(8, 2), _split(24, 3), "toy", "toy", ["a", "b", "c"],
                    (3, 8, 8))
    ctx = context_for("toy", _model(), splits, profile,
                      runs_dir=None if tmp_path is None else tmp_path / "runs")
    ctx.evaluate_fp()
    return ctx


def _hits(model: nn.Module, split: TensorSplit) -> np.ndarray:
    """An independent count: argmax over one batch of every test image, right or not."""
    (x, y), = split.batches(len(split))
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).numpy()


@pytest.mark.parametrize("protocol", PROTOCOLS.names())
def test_every_protocol_turns_a_policy_into_a_checked_record(protocol, tmp_path):
    ctx = _context(tmp_path)
    before = copy.deepcopy(ctx.model.state_dict())
    allocation = uniform_allocation(ctx, "W4A4")
    outcome = run_policy(ctx, allocation, protocol, method="contract",
                         run_id=run_id("contract", "toy", "W4A4", protocol_tag(protocol)),
                         resume_dir=None)
    record = outcome.record
    assert record.protocol == protocol and record.provenance["seed"] == 0
    assert {n: (b["w_bits"], b["a_bits"]) for n, b in record.policy["layers"].items()} == (
        allocation.bits)
    assert record.cost == cost_summary(ctx.layers, allocation.bits)
    hits = _hits(outcome.output.model, ctx.splits.test)
    assert record.accuracy["top1"] == pytest.approx(100 * hits.mean())
    assert np.array_equal(decode_correct(record.extra["test_correct"]), hits)  # image by image
    assert record.accuracy["drop"] == pytest.approx(ctx.fp_top1 - record.accuracy["top1"])
    assert record.timing["protocol_s"] > 0 and record.timing["total_s"] >= (
        record.timing["protocol_s"])
    assert record.extra["config"] == "W4A4"
    # the FP model is left as it was, and the record was saved and reads back the same
    assert all(torch.equal(before[k], v) for k, v in ctx.model.state_dict().items())
    (saved,) = load_runs(tmp_path / "runs")
    assert saved.run_id == record.run_id and saved.accuracy == record.accuracy
    # the same seed gives the same model again
    again = run_policy(ctx, allocation, protocol, method="contract", run_id="again",
                       resume_dir=None)
    assert again.record.accuracy["top1"] == record.accuracy["top1"]
    assert again.record.accuracy["loss"] == pytest.approx(record.accuracy["loss"], rel=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS.names())
def test_a_misspelled_option_is_refused_before_any_compute(protocol):
    ctx = _context()
    calls = []
    ctx.model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(MpqbenchError, match=r"unknown options \['rhoo'\]"):
        run_policy(ctx, uniform_allocation(ctx, "W4A4"), protocol, method="m", run_id="x",
                   options={"rhoo": 0.1})
    assert not calls


def test_unknown_protocol_and_misplaced_settings_are_errors():
    ctx = _context()
    with pytest.raises(MpqbenchError, match="unknown protocol 'qat_sgd'; known: ptq-adaround"):
        run_policy(ctx, uniform_allocation(ctx, "W4A4"), "qat_sgd", method="m", run_id="x")
    with pytest.raises(MpqbenchError, match="post-training"):
        run_policy(ctx, uniform_allocation(ctx, "W4A4"), "ptq-nearest", method="m",
                   run_id="x", qat=ctx.profile.qat())
    with pytest.raises(MpqbenchError, match="seed 0 is not the run's seed 5"):
        run_policy(ctx, uniform_allocation(ctx, "W4A4"), "qat_lsq", 5, method="m",
                   run_id="x", qat=ctx.profile.qat())


def test_the_run_seed_reaches_the_record_and_the_calibration_draw():
    ctx = _context()
    allocation = uniform_allocation(ctx, "W3A3")
    runs = {seed: run_policy(ctx, allocation, "ptq-nearest", seed, method="m",
                             run_id=f"s{seed}").record for seed in (0, 1)}
    assert [r.provenance["seed"] for r in runs.values()] == [0, 1]
    assert runs[0].accuracy["loss"] != runs[1].accuracy["loss"]  # another calibration draw


def test_ptq_protocols_are_the_registered_roundings():
    from mpqbench.ptq import ROUNDINGS

    ptq = {n for n in PROTOCOLS.names() if isinstance(PROTOCOLS.get(n), PtqProtocol)}
    assert ptq == {f"ptq-{r}" for r in ROUNDINGS.names()}


def test_sweeps_allocate_at_every_budget_and_name_runs_in_one_place(tmp_path):
    ctx = _context(tmp_path)
    table = compute("fisher_fit", ctx.sensitivity_context([2, 4, 8], 8))
    budgets = [Budget(compression_ratio=6), Budget(compression_ratio=7)]
    mixed = sweep(ctx, {"fit": table}, budgets, "ptq-nearest", method="m")
    assert list(mixed.run_id) == [f"m-toy-fit-{budget_label(b)}-nearest" for b in budgets]
    assert (mixed.compression_ratio >= [6 - 1e-9, 7 - 1e-9]).all()
    uniform = uniform_references(ctx, budgets, [2, 4, 8], 8, "ptq-nearest", method="m")
    # for each budget, the narrowest uniform width whose ratio does not exceed it, run once
    ratios = {w: cost_summary(ctx.layers, uniform_allocation(ctx, f"W{w}A8").bits)[
        "compression_ratio"] for w in (2, 4, 8)}
    expected = []
    for budget in budgets:
        w = min(w for w, r in ratios.items() if r <= budget.compression_ratio + 1e-9)
        if f"m-toy-W{w}A8-nearest" not in expected:
            expected.append(f"m-toy-W{w}A8-nearest")
    assert list(uniform.run_id) == expected
    assert {r.run_id for r in load_runs(tmp_path / "runs")} == set(mixed.run_id) | set(
        uniform.run_id)


def test_run_ids_are_spelled_in_one_place():
    assert run_id("saq", "resnet20", "W4A4", "qat_saq", f"rho{0.9:g}") == (
        "saq-resnet20-W4A4-qat_saq-rho0.9")
    assert run_id("m", "r", "r", 0.25) == "m-r-r-0.25"
    assert protocol_tag("ptq-adaround") == "adaround" and protocol_tag("qat_lsq") == "qat_lsq"
    with pytest.raises(MpqbenchError, match="run id part 'a/b'"):
        run_id("m", "r", "a/b")


def test_build_context_checks_params_before_reading_anything(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("fix_first_last: true", "fix_frist_last: true"))
    (tmp_path / "notebooks").mkdir()
    with pytest.raises(MpqbenchError, match="fix_frist_last"):
        build_context("resnet20", "smoke", bad, checkpoint_dir=tmp_path / "nowhere")


def test_profile_method_cfg_and_qat_name_what_is_missing():
    profile = Profile("p", 1, "cifar10", "cpu", EvalConfig(10), PtqConfig(),
                      {"method_cfg": {"a": {"x": 1}}})
    assert profile.method_cfg("a") == {"x": 1}
    with pytest.raises(MpqbenchError, match="method_cfg.b"):
        profile.method_cfg("b")
    with pytest.raises(MpqbenchError, match="profile 'p' has no 'qat'"):
        profile.qat()


def test_build_context_names_an_unknown_model_before_looking_for_its_checkpoint(tmp_path):
    with pytest.raises(MpqbenchError, match="unknown model 'resnet_20'"):
        build_context("resnet_20", "smoke", checkpoint_dir=tmp_path / "nowhere")
