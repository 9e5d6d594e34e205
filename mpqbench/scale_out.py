"""Run independent DVC stages in parallel: N local workers, one workspace, one DVC cache.

    python -m mpqbench.scale_out -j 2 --grid            # every allocate@ and evaluate@ stage
    python -m mpqbench.scale_out -j 2 STAGE [STAGE ...]
    python -m mpqbench.scale_out --executor slurm -j 8 --grid   # Slurm job arrays (submitit)

Each worker runs ``dvc --wait-for-lock repro -s STAGE``: DVC holds its repository lock only
while it checks and records a stage and releases it while the stage's command runs, so the
commands of independent stages overlap and each stage's outputs and ``dvc.lock`` entry are
written by DVC itself, exactly as in a serial ``dvc repro`` (DVC's documented parallel stage
execution). A stage starts once every stage it depends on among those asked for has finished
(the order comes from DVC's own graph); a failed stage stops the stages downstream of it and
makes the exit status non-zero. Each worker's stages get ``cores // jobs`` threads
(``OMP_NUM_THREADS``), so that two workers on two cores do not oversubscribe them; a thread
count changes float summation order, so compare records made with the same one.
``--log FILE`` writes each stage's start and end times (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from dvc.repo import Repo

GRID_PREFIXES = ("allocate@", "evaluate@")


def stage_graph(repo_root: str | Path = ".") -> dict[str, set[str]]:
    """Stage name -> the names of the stages it depends on directly (DVC's graph)."""
    with Repo(str(repo_root)) as repo:
        graph = repo.index.graph
        return {stage.addressing: {up.addressing for up in graph.successors(stage)}
                for stage in graph.nodes}


def upstream_within(graph: dict[str, set[str]], stages: list[str]) -> dict[str, set[str]]:
    """For each of ``stages``: the stages among ``stages`` it depends on, directly or not."""
    chosen = set(stages)
    out = {}
    for stage in stages:
        seen, todo = set(), list(graph.get(stage, ()))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))
        out[stage] = seen & chosen
    return out


def run_parallel(stages: list[str], jobs: int, repo_root: str | Path = ".",
                 log: str | Path | None = None, dvc: str = "dvc",
                 graph: dict[str, set[str]] | None = None) -> dict[str, int]:
    """``dvc repro -s`` each of ``stages`` on ``jobs`` workers in dependency order; returns
    each stage's exit status (-1: not run because a stage it depends on failed). ``graph``:
    default DVC's (``stage_graph``)."""
    graph = stage_graph(repo_root) if graph is None else graph
    unknown = [s for s in stages if s not in graph]
    if unknown:
        raise SystemExit(f"unknown stage {unknown[0]!r}; `dvc stage list` names them")
    needs = upstream_within(graph, stages)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    status: dict[str, int] = {}
    lock = threading.Lock()

    def run_one(stage: str) -> int:
        start = time.time()
        done = subprocess.run([dvc, "--wait-for-lock", "repro", "-s", stage], cwd=repo_root,
                              env=env, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(f"{stage} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n")
        if log is not None:
            with lock, open(log, "a") as f:
                f.write(json.dumps({"stage": stage, "start": start, "end": time.time(),
                                    "returncode": done.returncode}) + "\n")
        print(f"{stage}: exit {done.returncode} after {time.time() - start:.0f} s", flush=True)
        return done.returncode

    pending = list(stages)
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for stage in list(pending):
                if any(status.get(up, 0) != 0 for up in needs[stage] if up in status):
                    status[stage] = -1  # an upstream stage failed
                    pending.remove(stage)
                elif len(running) < jobs and needs[stage] <= {s for s in status
                                                              if status[s] == 0}:
                    running[pool.submit(run_one, stage)] = stage
                    pending.remove(stage)
            if not running:
                if pending:  # waiting on nothing that can finish: a failed or missing upstream
                    for stage in pending:
                        status[stage] = -1
                    pending.clear()
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                status[running.pop(future)] = future.result()
    return status


def main(argv: list[str] | None = None) -> int:
    from mpqbench.config import load_yaml
    from mpqbench.errors import MpqbenchError
    from mpqbench.executors import EXECUTORS, RunRequest, run_stages

    parser = argparse.ArgumentParser(prog="python -m mpqbench.scale_out",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("stages", nargs="*", help="stage names (`dvc stage list`)")
    parser.add_argument("-j", "--jobs", type=int, default=2,
                        help="workers, or jobs of an array at once (default 2)")
    parser.add_argument("--grid", action="store_true",
                        help="every allocate@ and evaluate@ stage of dvc.yaml")
    parser.add_argument("--executor", default="local",
                        help=f"where stages run: {', '.join(EXECUTORS.names())} (default local)")
    parser.add_argument("--profile", default=None,
                        help="whose resources configs/cluster.yaml gives a job (default: "
                             "params.yaml's profile)")
    parser.add_argument("--log", default=None, help="JSON lines: each stage's start and end "
                                                    "(local executor)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    stages = list(args.stages)
    if args.grid:
        stages += [s for s in stage_graph() if s.startswith(GRID_PREFIXES) and s not in stages]
    if not stages:
        parser.error("name stages or pass --grid")
    try:
        EXECUTORS.get(args.executor)
        if args.executor == "local":
            status = run_parallel(stages, args.jobs, log=args.log)
        else:
            profile = args.profile or load_yaml(Path("params.yaml").read_text())["profile"]
            status = run_stages(args.executor, RunRequest(stages, ".", args.jobs, profile))
    except MpqbenchError as exc:
        print(f"mpqbench: error: {exc}", file=sys.stderr)
        return 2
    failed = sorted(s for s, rc in status.items() if rc != 0)
    if failed:
        print(f"{len(failed)} of {len(stages)} stages failed or were not run: "
              f"{', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
