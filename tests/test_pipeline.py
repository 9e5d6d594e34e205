"""The real pipeline on the smoke profile, in a temporary copy of the repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpqbench.cost import Budget
from mpqbench.naming import budget_label, run_id

from .conftest import REPO, mirror_path

pytestmark = pytest.mark.slow


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        # results are the pipeline's to make; the benchmark figures are an input of the report
        if src.is_file() and (not name.startswith("results/")
                              or name.startswith("results/benchmarks/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run(cmd, cwd, env):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_dvc_repro_on_the_smoke_profile(tmp_path):
    if mirror_path() is None:
        pytest.skip("needs MPQBENCH_MIRROR")
    repo = tmp_path / "repo"
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    # a new method added the documented way (docs/adding-a-method.md): the template, its
    # settings, its stage generated into dvc.yaml
    shutil.copy(repo / "notebooks/_template.py", repo / "notebooks/toy.py")
    params["method_cfg"]["toy"] = {"metric": "fisher_fit", "solver": "pareto", "bits": [3, 4, 8],
                                   "a_bits": 8, "budgets": [{"compression_ratio": 6}],
                                   "protocol": "ptq-nearest"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MPQBENCH_MIRROR": str(mirror_path()), "MPQBENCH_PROGRESS": "off",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    _run([sys.executable, "-m", "mpqbench.stage_deps", "--new-method", "toy", "--add"], repo,
         env)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(git + ["init", "-q"], repo, env)
    _run(git + ["add", "-A"], repo, env)
    _run(git + ["commit", "-qm", "copy"], repo, env)

    _run(["dvc", "repro"], repo, env)

    run = json.loads((repo / "results/runs/fp_baseline-resnet20/fp-resnet20.json").read_text())
    assert run["method"] == "fp" and run["dataset_variant"] == "cifar10-jpeg"
    assert run["provenance"]["profile"] == "smoke" and run["provenance"]["git_commit"]
    assert run["accuracy"]["test_images"] == 500 and 60 < run["accuracy"]["top1"] <= 100
    assert run["cost"]["compression_ratio"] == 1.0
    per_class = run["extra"]["per_class_top1"]
    assert len(per_class) == 10 and min(per_class.values()) <= run["accuracy"]["top1"] <= max(
        per_class.values())
    metrics = json.loads((repo / "results/metrics/checkpoint-resnet20.json").read_text())
    assert metrics["finetune_epochs"] == 1 and metrics["dataset_variant"] == "cifar10-jpeg"
    assert metrics["test_top1"] == pytest.approx(run["accuracy"]["top1"])  # same seeded subset
    rendered = repo / "results/notebooks/fp_baseline-resnet20"
    assert (rendered / "fp_baseline.ipynb").is_file() and (rendered / "fp_baseline.html").is_file()
    summary = (repo / "results/summary.csv").read_text()
    assert "fp-resnet20" in summary

    cfg = params["method_cfg"]
    uniform = {p.stem: json.loads(p.read_text())
               for p in (repo / "results/runs/uniform-resnet20").glob("*.json")}
    assert set(uniform) == {run_id("uniform", "resnet20", c, r) for c in cfg["uniform"]["configs"]
                            for r in cfg["uniform"]["roundings"]}
    w8 = uniform["uniform-resnet20-W8A8-nearest"]
    assert w8["accuracy"]["fp_top1"] == pytest.approx(run["accuracy"]["top1"])
    assert abs(w8["accuracy"]["drop"]) <= 2.0  # 500 images; quick profile: 0.08 on 10,000
    assert uniform["uniform-resnet20-W2A8-nearest"]["accuracy"]["top1"] < 40
    assert w8["policy"]["layers"]["linear"] == {"w_bits": 8, "a_bits": 8}
    assert uniform["uniform-resnet20-W4A8-adaround"]["cost"]["compression_ratio"] == (
        pytest.approx(7.968, abs=1e-3))  # 4-bit everywhere but the 8-bit stem and classifier
    assert (repo / "results/notebooks/uniform-resnet20/uniform.html").is_file()

    mixed = [json.loads(p.read_text())
             for p in (repo / "results/runs/first_order_ptq-resnet20").glob("*.json")]
    fo = cfg["first_order_ptq"]
    searched = [r for r in mixed if r["method"] == "first_order_ptq" and r["metric"]]
    assert {r["run_id"] for r in searched} == {  # every metric at every budget
        run_id("first_order_ptq", "resnet20", m, budget_label(Budget.from_dict(b)), "nearest")
        for m in fo["metrics"] for b in fo["budgets"]}
    for r in searched:  # every policy meets its budget, recounted from the stored policy
        assert r["cost"]["compression_ratio"] >= r["budget"]["compression_ratio"] - 1e-9
        assert r["extra"]["solver_status"] == "Optimal" and r["timing"]["sensitivity_s"] > 0
    hawq = [r for r in mixed if r["method"] == "hawq_v3"]
    assert {r["bit_candidates"][0] for r in hawq} == {4}
    assert len(hawq) == len(fo["hawq_v3"]["kinds"]) * len(fo["hawq_v3"]["ratios"])

    bank = json.loads((repo / "results/policy_bank/resnet20.json").read_text())
    bank_cfg = params["profiles"]["smoke"]["policy_bank"]
    assert len(bank["entries"]) == bank_cfg["count"] and bank["config"]["budget"] == (
        bank_cfg["budget"])
    free = [json.loads(p.read_text())
            for p in (repo / "results/runs/data_free-resnet20").glob("*.json")]
    synthetic = [r for r in free if r["extra"].get("calibration") == "given batches"]
    assert len(synthetic) == len(cfg["data_free"]["allocate"]) * len(cfg["data_free"]["budgets"])
    assert {r["metric"] for r in synthetic} == {"task_loss", "zeroq_kl"}
    # both allocators' policies calibrated on the same synthetic images (params: calibrate_on)
    assert {r["extra"]["calibration_data"] for r in synthetic} == {"labeled"}

    limpq = {r["run_id"]: r for r in (json.loads(p.read_text()) for p in
                                      (repo / "results/runs/limpq-resnet20").glob("*.json"))}
    assert len(limpq) == len(cfg["limpq"]["budgets"]) + len(cfg["limpq"]["uniform"])
    w4eq = limpq["limpq-resnet20-W4A4eq-qat_lsq"]
    assert w4eq["protocol"] == "qat_lsq" and w4eq["solver"] == "ilp"
    assert w4eq["cost"]["bitops_g"] <= limpq["limpq-resnet20-uniform-W4A4-qat_lsq"]["cost"][
        "bitops_g"] * (1 + 1e-9)
    assert w4eq["extra"]["forward_passes"] == 2 and len(w4eq["extra"]["loss_curve"]) == 2
    saq = {r["run_id"]: r for r in (json.loads(p.read_text()) for p in
                                    (repo / "results/runs/saq-resnet20").glob("*.json"))}
    saq_cfg = yaml.safe_load((repo / "params.yaml").read_text())["method_cfg"]["saq"]
    assert len(saq) == (len(saq_cfg["configs"]) * 2 + len(saq_cfg["rho_sweep"]) + 2
                        + len(saq_cfg["every"]) + 2)  # widths x protocols, the rho sweep,
    # cases 1-2, the efficiency schedules, the mixed policy x 2
    rho = f"{saq_cfg['cases_rho']:g}"
    assert saq["saq-resnet20-W4A4-qat_saq"]["extra"]["forward_passes"] == 4  # 2 steps x 2
    assert saq[f"saq-resnet20-W4A4-qat_saq-every2-rho{rho}"]["extra"]["forward_passes"] == 3
    assert saq[f"saq-resnet20-W4A4-qat_saq-case2-rho{rho}"]["extra"]["step_options"] == {
        "rho": saq_cfg["cases_rho"], "case": 2, "perturb_space": saq_cfg["perturb_space"]}
    assert saq["saq-resnet20-mixed-qat_saq"]["policy"]["layers"] == w4eq["policy"]["layers"]

    (toy,) = [json.loads(p.read_text()) for p in (repo / "results/runs/toy-resnet20").glob("*")]
    assert toy["method"] == "toy" and toy["metric"] == "fisher_fit"
    assert toy["solver"] == "pareto-dp"
    assert toy["cost"]["compression_ratio"] >= 6 and f"{toy['run_id']}," in summary

    # the comparison report: rendered, with its figures, from the RunRecords
    assert (repo / "results/report.ipynb").is_file() and (repo / "results/report.html").is_file()
    for name in ("accuracy_vs_size_mib-resnet20", "accuracy_vs_bitops_g-resnet20", "bits-ratio8"):
        assert (repo / f"results/figures/{name}.png").stat().st_size > 10_000, name
    # every declared run key made records, and every record reached the report
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    notebook_stages = [s for s in stages if (repo / "notebooks" / f"{s}.py").is_file()
                       and s != "report"]
    assert "toy" in notebook_stages
    for stage in notebook_stages:
        assert any((repo / "results/runs" / f"{stage}-resnet20").glob("*.json")), stage
    metrics = {p.stem: json.loads(p.read_text())["top1"]
               for p in (repo / "results/metrics/runs").rglob("*.json")}
    all_runs = [json.loads(p.read_text()) for p in (repo / "results/runs").glob("*/*.json")]
    grid_runs = [json.loads(p.read_text())
                 for p in (repo / "results/grid/runs").glob("*/*.json")]
    assert metrics == {r["run_id"]: pytest.approx(r["accuracy"]["top1"], abs=1e-4)
                       for r in all_runs + grid_runs}
    # one folder a family: `dvc metrics show results/metrics/runs/grid` is the grid alone
    assert {p.name for p in (repo / "results/metrics/runs").iterdir()} == (
        {r["method"] for r in all_runs + grid_runs})
    assert all(f"{r['run_id']}," in summary for r in all_runs)
    report = (repo / "results/report.html").read_text()
    assert "limpq_indicator" in report and "qat_saq" in report and "toy" in report

    # the grid: one allocation per allocator (every shared budget served or marked), one
    # cell list per (allocator, protocol), its records at the declared budget names, and the
    # leaderboard with every budget
    grid = params["grid"]
    for allocator in grid["allocators"]:
        doc = json.loads((repo / f"results/grid/allocations/{allocator}-resnet20.json")
                         .read_text())
        assert set(doc["budgets"]) == set(params["budgets"]), allocator
        for protocol, cell in grid["cells"].items():
            folder = repo / f"results/grid/runs/{allocator}-{protocol}-resnet20"
            cells = [json.loads(line) for line in (folder / "cells.jsonl").read_text()
                     .splitlines()]
            assert {c["budget"] for c in cells} == set(cell["budgets"])
            cut = set((cell.get("cut") or {}).get("smoke", []))
            only = cell.get("only") or {}
            for c in cells:
                status = doc["budgets"][c["budget"]]["status"]
                if c["budget"] in only and allocator not in only[c["budget"]]:
                    expected = "not applicable"
                elif allocator in cut or f"{allocator}@{c['budget']}" in cut:
                    expected = "cut"
                else:
                    expected = status
                assert c["status"] == expected, (allocator, protocol, c)
                if expected == "ok":
                    record = json.loads((folder / f"{c['run_id']}.json").read_text())
                    assert record["extra"]["budget_name"] == c["budget"]
                    assert record["protocol"] == protocol
    leaderboard = (repo / "results/leaderboard.md").read_text()
    assert all(f"### {name}" in leaderboard for name in params["budgets"])
    assert (repo / "results/figures/grid-size.png").stat().st_size > 10_000

    second = _run(["dvc", "repro"], repo, env)
    # the params stage runs on every repro (always_changed: its preflight guards the pinned
    # checkpoint and the budgets); its output's bytes do not change, so nothing else runs
    assert re.findall(r"Running stage '([^']+)'", second) == ["params"], second


def _fake_imagenet(root: Path, classes: int, train: int, val: int) -> None:
    """An ImageNet-layout folder of small random JPEGs (the loader resizes them to 224)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / part / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)


def _torchvision_weights_in_cache(torch_home: Path, model: str, weights_name: str) -> None:
    """Seeded random weights where torch.hub caches the published file (no network here).

    torchvision checks a file's hash only when it downloads it, so the real loading path runs.
    """
    import torch
    import torchvision

    url = torchvision.models.get_weight(weights_name).url
    target = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(model).state_dict(), target)


def test_imagenet_suite_runs_through_the_overlay(tmp_path):
    """configs/imagenet.yaml, narrowed to MobileNetV2, on the smoke profile: every stage runs
    on an ImageNet-layout folder with torchvision's loader and MobileNetV2's real layers."""
    repo = tmp_path / "repo"
    _copy_repo(repo)
    _fake_imagenet(tmp_path / "imagenet", classes=1000, train=2, val=1)
    torch_home = tmp_path / "torch_home"
    _torchvision_weights_in_cache(torch_home, "mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1")
    overlay = yaml.safe_load((repo / "configs/imagenet.yaml").read_text())
    overlay["models"] = ["mobilenet_v2"]
    (repo / "configs/test.yaml").write_text(yaml.safe_dump(overlay))
    env = {**os.environ, "MPQBENCH_PROGRESS": "off", "TORCH_HOME": str(torch_home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MPQBENCH_MIRROR", None)  # nothing here may come from the CIFAR mirror
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    _run(git + ["init", "-q"], repo, env)
    _run([sys.executable, "-m", "mpqbench", "overlay", "configs/test.yaml",
          "--set", f"imagenet_root={tmp_path / 'imagenet'}", "--set", "profile=smoke",
          "--set", "data.val_size=200",
          # fewer images and runs than smoke: this test is about the ImageNet path, not numbers
          "--set", "profiles.smoke.eval.max_images=64",
          "--set", "profiles.smoke.ptq.calib_images=16",
          "--set", "profiles.smoke.ptq.act_observer=minmax",
          "--set", "profiles.smoke.policy_bank.val_images=64",
          "--set", "profiles.smoke.policy_bank.count=2",
          "--set", "method_cfg.uniform.configs=[W4A8]",
          "--set", "method_cfg.uniform.roundings=[nearest]",
          "--set", "method_cfg.limpq.budgets=[{bitops_equiv: W4A4}]",
          "--set", "method_cfg.limpq.uniform=[]"], repo, env)
    _run(git + ["add", "-A"], repo, env)
    _run(git + ["commit", "-qm", "copy"], repo, env)

    # one method stage, LIMPQ (indicator training, the pair ILP over 53 layers, QAT), its grid
    # allocation evaluated with PTQ, and the report; the other methods and grid cells run the
    # same layer and protocol code and take half an hour here (the CIFAR smoke pipeline above
    # runs them all)
    _run(["dvc", "repro", "fp_baseline", "uniform", "limpq", "allocate@limpq-mobilenet_v2",
          "evaluate@limpq-ptq-nearest-mobilenet_v2"], repo, env)
    _run(["dvc", "repro", "-s", "report"], repo, env)

    manifest = json.loads((repo / "data/imagenet/meta.json").read_text())
    assert manifest["counts"] == {"train": 2000, "test": 1000} and len(manifest["classes"]) == 1000
    fp = json.loads((repo / "results/runs/fp_baseline-mobilenet_v2/fp-mobilenet_v2.json")
                    .read_text())
    assert fp["dataset_variant"] == "imagenet" and fp["accuracy"]["test_images"] == 64
    runs = {p.parent.name: json.loads(p.read_text())
            for p in (repo / "results/runs").glob("*-mobilenet_v2/*.json")}
    assert set(runs) == {"fp_baseline-mobilenet_v2", "uniform-mobilenet_v2",
                         "limpq-mobilenet_v2"}
    assert all(r["dataset_variant"] == "imagenet" for r in runs.values())
    (limpq,) = [json.loads(p.read_text())
                for p in (repo / "results/runs/limpq-mobilenet_v2").glob("*")]
    assert limpq["solver"] == "ilp" and len(limpq["policy"]["layers"]) == 53
    # searched: nothing fixed (fix_first_last: false), and the budget is met
    assert limpq["policy"]["layers"]["classifier.1"]["w_bits"] in (2, 3, 4, 5, 6)
    from mpqbench.cost import layer_costs
    from mpqbench.models.zoo import build_model

    layers = layer_costs(build_model("mobilenet_v2", 1000), (3, 224, 224))
    assert layers[0].name == "features.0.0"  # fed by the image: 8-bit inputs in BitOps
    w4a4 = sum(layer.macs * 4 * (8 if i == 0 else 4) for i, layer in enumerate(layers)) / 1e9
    assert limpq["cost"]["bitops_g"] <= w4a4 * (1 + 1e-9)
    assert (repo / "results/figures/accuracy_vs_size_mib-mobilenet_v2.png").is_file()
    # the grid reuses LIMPQ's indicators at the shared size budgets: a partial grid (one
    # allocator, one protocol) still makes a leaderboard
    allocation = json.loads((repo / "results/grid/allocations/limpq-mobilenet_v2.json")
                            .read_text())
    cells = [json.loads(line) for line in (
        repo / "results/grid/runs/limpq-ptq-nearest-mobilenet_v2/cells.jsonl").read_text()
        .splitlines()]
    assert {c["budget"] for c in cells} == {"size8x", "size10.67x"}
    assert all(c["status"] == "ok" for c in cells)  # fix_first_last: false reaches 8x
    assert set(allocation["budgets"]) == {"size8x", "size10.67x", "W4A4eq", "W3A3eq"}
    assert "limpq" in (repo / "results/leaderboard.md").read_text()
