"""How far a PTQ and a QAT cell move when the CPU kernels change instruction set.

The committed records come from an AVX-512 machine. This script re-runs, from the pinned
checkpoint, one PTQ cell (uniform W4A8, nearest, the quick profile's calibration) and one QAT
cell (uniform W4A4, qat_lsq, the quick schedule) twice: once with the machine's own kernels and
once in a child process limited to AVX2 (``ATEN_CPU_CAPABILITY=avx2`` for PyTorch's own kernels,
``ONEDNN_MAX_CPU_ISA=AVX2`` for oneDNN's convolutions), the way an AVX2 machine would compute.
It prints both top-1 figures and their difference and writes
results/benchmarks/cross_isa.json. The README's tolerances per protocol come from here.

    python -m benchmarks.cross_isa            # both settings (about 5 minutes on 2 cores)
    python -m benchmarks.cross_isa --child    # one setting, JSON on stdout (used internally)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from benchmarks.common import write_figures

ISAS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def cells() -> dict[str, float]:
    """Top-1 of the two cells under the current process's kernels."""
    from mpqbench.context import build_context
    from mpqbench.protocols import run_policy, uniform_allocation

    ctx = build_context("resnet20", "quick")
    ptq_top1, qat_top1 = (
        run_policy(ctx, uniform_allocation(ctx, config), protocol, method="cross_isa",
                   run_id=f"cross_isa-{protocol}", resume_dir=None).record.accuracy["top1"]
        for config, protocol in (("W4A8", "ptq-nearest"), ("W4A4", "qat_lsq")))
    return {"PTQ W4A8 nearest": ptq_top1, "QAT W4A4 qat_lsq (quick schedule)": qat_top1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                          "top1": cells()}))
        return
    runs = {}
    for name, env in ISAS.items():
        done = subprocess.run([sys.executable, "-m", "benchmarks.cross_isa", "--child"],
                              env={**os.environ, "MPQBENCH_PROGRESS": "off", **env},
                              capture_output=True, text=True, check=True)
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for cell in runs["native"]["top1"]:
        native, avx2 = runs["native"]["top1"][cell], runs["avx2"]["top1"][cell]
        rows.append({"cell": cell, f"top-1, {runs['native']['capability']} kernels": native,
                     "top-1, AVX2 kernels": avx2, "difference (points)": round(avx2 - native, 2)})
        print(f"{cell:36s} {native:7.2f} {avx2:7.2f} {avx2 - native:+6.2f}")
    write_figures("cross_isa", "Cross-instruction-set tolerance from the pinned checkpoint", rows,
                  {"native kernels": runs["native"]["capability"],
                   "limited kernels": runs["avx2"]["capability"]},
                  ["Both runs on the same machine from the same pinned checkpoint; only the "
                   "kernels' instruction set differs."])


if __name__ == "__main__":
    main()
