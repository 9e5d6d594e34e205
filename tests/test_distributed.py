"""QAT and LIMPQ's indicator training under torchrun: two CPU processes, gloo backend."""

import subprocess
import sys
from pathlib import Path

import torch

HELPER = Path(__file__).parent / "helpers" / "ddp_worker.py"


def test_two_ranks_end_with_identical_weights(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HELPER), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "MPQBENCH_PROGRESS": "off"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rank 0 of 2 done" in done.stdout and "rank 1 of 2 done" in done.stdout
    for name in ("saq", "limpq"):
        first = torch.load(tmp_path / f"{name}-rank0.pt", weights_only=True)
        second = torch.load(tmp_path / f"{name}-rank1.pt", weights_only=True)
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), f"{name}: {key} differs across ranks"
    # and training moved them: the LIMPQ 3-bit weight step is no longer its initial value
    from mpqbench.quant.multibit import multibit_model
    from tests.helpers.ddp_worker import fp_model

    start = multibit_model(fp_model(), (3, 8, 8), ["3"], [2, 3, 4]).state_dict()
    key = "3.weight_quantizer.per_bits.3.step"
    assert not torch.equal(start[key], first[key])
