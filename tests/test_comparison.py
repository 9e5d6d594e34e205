"""The comparison report's tables, on hand-made RunRecords (including none at all)."""

import random

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from mpqbench.comparison import (  # noqa: E402
    allocator_protocol_matrix,
    bits_at_budget,
    method_costs,
    metric_quality,
    paper_vs_reproduced,
    pareto_front,
    run_frame,
    top1_by_run,
)
from mpqbench.plots import accuracy_vs_cost  # noqa: E402
from mpqbench.results import RunRecord  # noqa: E402


def _run(run_id, method, top1, size, protocol="ptq-nearest", metric=None, solver="ilp",
         budget=None, seed=0, extra=None, bits=4):
    return RunRecord(
        run_id=run_id, method=method, model="resnet20", dataset="cifar10",
        dataset_variant="cifar10-jpeg", protocol=protocol, metric=metric, solver=solver,
        budget=budget,
        policy={"layers": {"conv1": {"w_bits": 8, "a_bits": 8},
                           "l1": {"w_bits": bits, "a_bits": 8}}},
        cost={"size_mib": size, "bitops_g": 2 * size, "compression_ratio": 32 / (size * 40),
              "mean_w_bits": bits, "mean_a_bits": 8},
        accuracy={"fp_top1": 90.0, "top1": top1, "top5": 99.0, "drop": 90.0 - top1},
        timing={"sensitivity_s": 2.0, "search_s": 0.01, "protocol_s": 5.0, "total_s": 7.01},
        provenance={"seed": seed, "profile": "quick", "device": "cpu", "git_commit": "abc"},
        extra=extra or {})


def _runs():
    return [
        _run("fp-resnet20", "fp", 90.0, 1.0, protocol="none", solver=None),
        _run("u-W4A8", "uniform", 85.0, 0.125, solver="uniform", extra={"config": "W4A8"}),
        _run("u-W8A8", "uniform", 89.9, 0.25, solver="uniform", extra={"config": "W8A8"}),
        _run("fo-r8", "first_order_ptq", 86.0, 0.124, metric="first_order",
             budget={"compression_ratio": 8}, bits=3),
        _run("h-r8", "first_order_ptq", 84.0, 0.124, metric="hessian_trace",
             budget={"compression_ratio": 8}, bits=5),
        _run("lq-r8", "limpq", 87.0, 0.123, protocol="qat_lsq", metric="limpq_indicator",
             budget={"compression_ratio": 8}, seed=0, bits=6),
        _run("lq-r8-seed1", "limpq", 86.0, 0.123, protocol="qat_lsq", metric="limpq_indicator",
             budget={"compression_ratio": 8}, seed=1, bits=6),
        _run("df", "data_free", 80.0, 0.124, metric="task_loss",
             budget={"compression_ratio": 8},
             extra={"table": "task_loss-low-synthetic", "sensitivity_cost": {"seconds": 19.0},
                    "metric_quality": {"tables": {
                        "task_loss-low-synthetic": {"spearman": 0.7, "kendall": 0.5,
                                                    "policies": 50},
                        "zeroq_kl-zeroq": {"spearman": 0.9, "kendall": 0.7, "policies": 50}}}}),
    ]


def test_pareto_front_equals_brute_force():
    rng = random.Random(0)
    for _ in range(20):
        frame = pd.DataFrame({"size_mib": [rng.uniform(0, 1) for _ in range(15)],
                              "top1": [rng.uniform(0, 100) for _ in range(15)]})
        front = pareto_front(frame, "size_mib")
        dominated = {i for i, a in frame.iterrows() for j, b in frame.iterrows()
                     if i != j and b.size_mib <= a.size_mib and b.top1 > a.top1}
        assert set(front.index) == set(frame.index) - dominated


def test_tables_read_allocators_protocols_and_seeds():
    frame = run_frame(_runs())
    assert list(frame.allocator[:4]) == ["fp", "uniform", "uniform", "first_order"]
    assert set(frame.budget[frame.method == "limpq"]) == {"ratio8"}
    matrix = allocator_protocol_matrix(frame)
    assert matrix.loc[("resnet20", "ratio8", "limpq_indicator"), "qat_lsq"] == 86.5  # 2 seeds
    assert matrix.loc[("resnet20", "ratio8", "first_order"), "ptq-nearest"] == 86.0
    assert matrix.loc[("resnet20", "W4A8", "uniform"), "ptq-nearest"] == 85.0
    bits = bits_at_budget(frame, "ratio8")
    assert bits.loc["l1", "first_order / ptq-nearest"] == 3
    assert bits.loc["l1", "limpq_indicator / qat_lsq"] == 6
    quality = metric_quality(frame)
    assert list(quality.table) == ["zeroq_kl-zeroq", "task_loss-low-synthetic"]
    assert quality.set_index("table").loc["task_loss-low-synthetic", "seconds"] == 19.0
    costs = method_costs(frame).set_index("method")
    assert costs.loc["limpq", "runs"] == 2 and costs.loc["limpq", "total_s"] == 14.02
    paper = paper_vs_reproduced(frame)
    first = paper[paper.method == "first_order_ptq"]
    assert list(first["drop"]) == [4.0] and list(first["paper drop"]) == [0.65]
    assert "no run yet" in set(paper[paper.method == "saq"].here)
    fig = accuracy_vs_cost(frame, "resnet20", "bitops_g")
    assert fig.axes[0].get_xlabel() == "BitOps (G)"
    (front,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "Pareto front"]
    # every non-FP run; the two LIMPQ seeds merge into one point at their mean, 86.5
    assert list(front.get_ydata()) == [86.5, 89.9]
    (uniform,) = [line for line in fig.axes[0].get_lines()
                  if line.get_label() == "uniform, ptq-nearest"]
    assert list(uniform.get_xdata()) == [0.25, 0.5] and list(uniform.get_ydata()) == [85.0, 89.9]


def test_no_runs_at_all_gives_empty_tables():
    frame = run_frame([])
    assert allocator_protocol_matrix(frame).empty and method_costs(frame).empty
    assert metric_quality(frame).empty and bits_at_budget(frame, "ratio8").empty
    assert set(paper_vs_reproduced(frame).here) == {"no run yet"}


def test_the_dvc_metric_holds_every_runs_top1():
    runs = _runs()
    metric = top1_by_run(run_frame(runs))
    assert metric == {r.run_id: r.accuracy["top1"] for r in runs}
    assert list(metric) == sorted(metric)
