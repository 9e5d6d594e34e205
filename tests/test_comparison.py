"""The comparison report's tables, on hand-made RunRecords (including none at all)."""

import json
import random

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from mpqbench.comparison import (  # noqa: E402
    allocator_protocol_matrix,
    bits_at_budget,
    budget_title,
    method_costs,
    metric_quality,
    paper_vs_reproduced,
    pareto_front,
    run_frame,
    run_metrics,
    shared_budgets,
)
from mpqbench.plots import accuracy_vs_cost, indicator_heatmaps  # noqa: E402
from mpqbench.report import write_metrics  # noqa: E402
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
    assert set(matrix) == {"size", "uniform"}
    size = matrix["size"]  # 4 allocators x 2 recipes, half the cells filled: a pivot
    assert size.loc[("resnet20", "8x size", "limpq_indicator"), "qat_lsq"] == 86.5  # 2 seeds
    assert size.loc[("resnet20", "8x size", "first_order"), "ptq-nearest"] == 86.0
    assert matrix["uniform"].loc[("resnet20", "uniform W4A8", "uniform"), "ptq-nearest"] == 85.0
    assert shared_budgets(frame) == ["ratio8"]
    bits = bits_at_budget(frame, "ratio8")
    assert bits.loc["l1", "first_order / ptq-nearest"] == 3
    assert bits.loc["l1", "limpq_indicator / qat_lsq"] == 6
    quality = metric_quality(frame)
    assert list(quality.table) == ["zeroq_kl-zeroq", "task_loss-low-synthetic"]
    assert quality.set_index("table").loc["task_loss-low-synthetic", "seconds"] == 19.0
    costs = method_costs(frame).set_index("method")
    assert costs.loc["limpq", "runs"] == 2 and costs.loc["limpq", "all_runs_s"] == 14.02
    assert costs.loc["limpq", "protocol_s"] == 5.0  # a mean per run
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
    assert allocator_protocol_matrix(frame) == {} and method_costs(frame).empty
    assert metric_quality(frame).empty and bits_at_budget(frame, "ratio8").empty
    assert set(paper_vs_reproduced(frame).here) == {"no run yet"}


def test_the_dvc_metrics_hold_every_runs_accuracy_and_cost(tmp_path):
    runs = _runs()
    metrics = run_metrics(run_frame(runs))
    assert {k: v["top1"] for k, v in metrics.items()} == {r.run_id: r.accuracy["top1"]
                                                          for r in runs}
    assert metrics["u-W4A8"] == {"top1": 85.0, "drop": 5.0, "size_mib": 0.125, "bitops_g": 0.25}
    (tmp_path / "gone.json").write_text("{}")
    written = write_metrics(metrics, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert json.loads((tmp_path / "lq-r8.json").read_text())["top1"] == 87.0
    # by family: one folder each, `dvc metrics show <folder>/<family>` a small table
    (tmp_path / "old-family").mkdir()
    (tmp_path / "old-family" / "gone.json").write_text("{}")
    family_of = {run_id: "grid" if run_id.startswith("u-") else "methods" for run_id in metrics}
    written = write_metrics(metrics, tmp_path, family_of)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")) == \
        sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid", "methods"]
    assert json.loads((tmp_path / "methods" / "lq-r8.json").read_text())["top1"] == 87.0


def _qat(run_id, top1, rho=None, steps=100, bits=4, method="saq", seed=0, **options):
    extra = {"qat": {"epochs": 1, "max_batches_per_epoch": steps, "seed": seed},
             "loss_curve": [{"step": 1, "loss": 2.0}, {"step": steps, "loss": 1.0}],
             "step_options": {**({"rho": rho, "case": 3} if rho else {}), **options},
             "config": "W4A4"}
    return _run(run_id, method, top1, 0.1, protocol="qat_saq" if rho else "qat_lsq",
                solver="uniform", extra=extra, bits=bits, seed=seed)


def test_different_settings_are_never_averaged_and_seeds_are():
    runs = [_qat("lsq", 80.0), _qat("lsq-seed1", 82.0, seed=1),
            _qat("saq", 81.0, rho=0.4), _qat("saq-rho0.1", 70.0, rho=0.1),
            _qat("saq-case1", 60.0, rho=0.4, case=1), _qat("lsq-long", 85.0, steps=352,
                                                           method="limpq")]
    frame = run_frame(runs)
    assert len(set(frame.config)) == 5  # the two seeds share one configuration
    table = allocator_protocol_matrix(frame)["uniform"]
    row = ("resnet20", "uniform W4A4", "uniform")
    assert table.loc[row, "qat_lsq, 100 steps"] == 81.0  # two seeds of one setting
    assert table.loc[row, "qat_lsq, 352 steps"] == 85.0  # another schedule: its own column
    assert table.loc[row, "qat_saq, 100 steps, rho 0.4"] == 81.0
    assert table.loc[row, "qat_saq, 100 steps, rho 0.1"] == 70.0
    assert table.loc[row, "qat_saq, 100 steps, rho 0.4, case 1"] == 60.0


def test_one_cell_with_two_configurations_keeps_them_apart_and_sparse_tables_are_lists():
    runs = [_run("a", "first_order_ptq", 86.0, 0.12, metric="first_order",
                 budget={"compression_ratio": 8}, bits=3),
            _run("b", "data_free", 84.0, 0.12, metric="first_order",
                 budget={"compression_ratio": 8}, bits=5),
            _run("c", "limpq", 70.0, 0.12, protocol="qat_lsq", metric="limpq_indicator",
                 budget={"bitops_equiv": [4, 4]}),
            _run("d", "hawq_v3", 75.0, 0.12, metric="hessian_trace",
                 budget={"size_mib": 0.12}, extra={"hawq_v3": {"kind": "size", "r": 0.25}})]
    matrix = allocator_protocol_matrix(run_frame(runs))
    size = matrix["size"]
    assert list(size.columns) == ["ptq-nearest"]  # 3 rows x 1 recipe: dense
    assert size.loc[("resnet20", "8x size", "first_order [first_order_ptq]"), "ptq-nearest"] == 86
    assert size.loc[("resnet20", "8x size", "first_order [data_free]"), "ptq-nearest"] == 84
    assert size.loc[("resnet20", "HAWQ-V3 size r=0.25", "hessian_trace"), "ptq-nearest"] == 75
    assert matrix["bitops"].loc[("resnet20", "W4A4-equivalent BitOps", "limpq_indicator"),
                                "qat_lsq"] == 70
    assert shared_budgets(run_frame(runs)) == []  # one allocator at each budget label
    sparse = run_frame([_qat("x", 80.0),
                        _run("y", "uniform", 85.0, 0.1, solver="uniform", extra={"config": "W4A8"}),
                        _run("z", "uniform", 50.0, 0.1, solver="uniform", protocol="ptq-adaround",
                             extra={"config": "W2A8"})])
    long = allocator_protocol_matrix(sparse)["uniform"]  # 3 x 3 with 3 cells: a list
    assert list(long.columns) == ["model", "budget_title", "allocator", "recipe", "top1", "runs",
                                  "seeds"]
    assert sorted(long.top1) == [50.0, 80.0, 85.0]


def test_budgets_read_as_a_reader_says_them():
    assert budget_title({"compression_ratio": 10.67}) == "10.67x size"
    assert budget_title({"bitops_equiv": [3, 3]}) == "W3A3-equivalent BitOps"
    assert budget_title({"size_mib": 0.160324}) == "0.16 MiB"
    assert budget_title({"bitops_g": 1.15138}) == "1.15 G BitOps"
    assert budget_title(None, {"config": "W2A8"}) == "uniform W2A8"
    assert budget_title(None) == ""


def test_indicator_heatmaps_cross_out_exactly_the_unusable_widths():
    frame = pd.DataFrame([
        {"layer": "a", "kind": k, "bits": b, "indicator": 0.1 * (7 - b), "usable": b != 3}
        for k in ("weight", "activation") for b in (2, 3, 4)])
    fig = indicator_heatmaps(frame, ["a"], "indicator", "indicator", cross_out="usable")
    marks = [[t.get_position() for t in ax.texts if t.get_text() == "X"] for ax in fig.axes
             if ax.get_title()]
    assert marks == [[(1.5, 0.5)], [(1.5, 0.5)]]  # the 3-bit column of each kind
