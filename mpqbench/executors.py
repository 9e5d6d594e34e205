"""Where independent DVC stages run: workers on this machine, or jobs of a scheduler.

An executor takes stage names and runs each as ``dvc --wait-for-lock repro -s STAGE`` in the
repository, in dependency order (``scale_out.upstream_within``), and returns each stage's exit
status (-1: not run because a stage it needs failed). DVC itself writes each stage's outputs
and its ``dvc.lock`` entry, as in a serial ``dvc repro``; on a cluster the repository must sit
on a file system every node mounts (the usual home or project space), so that every job works
in the same checkout (docs/cluster.md).

- ``local``: ``-j`` worker threads on this machine (``scale_out.run_parallel``);
- ``slurm``: one Slurm job array per wave of stages whose upstream has finished, through
  submitit; resources per profile from ``configs/cluster.yaml``; a job that Slurm preempts or
  times out is requeued by submitit (``checkpoint``), and the stage's own resume states
  (``.resume/``, QAT) and set-aside outputs (``stage_guard``) let it pick up where it was;
- ``submitit-local``: the same job arrays on submitit's local engine (processes on this
  machine): the code path of ``slurm`` without a cluster, for tests and CI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from mpqbench.errors import MpqbenchError
from mpqbench.registry import Registry
from mpqbench.scale_out import run_parallel, stage_graph, upstream_within

CLUSTER_CONFIG = Path("configs/cluster.yaml")


@dataclass(frozen=True)
class Resources:
    """What one stage's job asks the scheduler for (Slurm names)."""

    cpus_per_task: int = 2
    gpus_per_node: int = 0
    mem_gb: int = 8
    timeout_min: int = 60
    partition: str | None = None

    @classmethod
    def for_profile(cls, profile: str, path: str | Path = CLUSTER_CONFIG) -> Resources:
        """``slurm.<profile>`` of ``path``; every key checked, defaults for those left out."""
        if not Path(path).is_file():
            raise MpqbenchError(f"{path} is missing; it holds the Slurm resources per profile "
                                "(see docs/cluster.md)")
        doc = yaml.safe_load(Path(path).read_text()) or {}
        profiles = doc.get("slurm") or {}
        if profile not in profiles:
            raise MpqbenchError(f"{path}: no slurm.{profile}; add the resources of profile "
                                f"{profile!r} (known: {', '.join(sorted(profiles))})")
        spec = profiles[profile] or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise MpqbenchError(f"{path}: slurm.{profile}: unknown key {unknown[0]!r}; allowed "
                                f"keys: {', '.join(sorted(known))}")
        return cls(**spec)


def repro_stage(stage: str, repo_root: str, dvc: str = "dvc") -> int:
    """One stage through DVC (what every job runs); its exit status."""
    done = subprocess.run([dvc, "--wait-for-lock", "repro", "-s", stage], cwd=repo_root)
    return done.returncode


class StageJob:
    """A job's callable: picklable, and requeued as it was when the scheduler preempts or
    times it out (submitit calls ``checkpoint`` then)."""

    def __init__(self, repo_root: str, dvc: str) -> None:
        self.repo_root, self.dvc = repo_root, dvc

    def __call__(self, stage: str) -> int:
        return repro_stage(stage, self.repo_root, self.dvc)

    def checkpoint(self, stage: str):
        import submitit

        return submitit.helpers.DelayedSubmission(StageJob(self.repo_root, self.dvc), stage)


@dataclass(frozen=True)
class RunRequest:
    """What an executor is asked to run, and where."""

    stages: list[str]
    repo_root: str = "."
    jobs: int = 2
    profile: str = "quick"
    dvc: str = "dvc"
    graph: dict[str, set[str]] | None = None


def _local(request: RunRequest) -> dict[str, int]:
    return run_parallel(request.stages, request.jobs, request.repo_root, dvc=request.dvc,
                        graph=request.graph)


def _waves(request: RunRequest, submit: Callable[[list[str]], list[int]]) -> dict[str, int]:
    """Submit the stages wave by wave: a wave is every stage whose upstream among those asked
    for has succeeded; a stage below a failure is not run (-1)."""
    graph = stage_graph(request.repo_root) if request.graph is None else request.graph
    unknown = [s for s in request.stages if s not in graph]
    if unknown:
        raise MpqbenchError(f"unknown stage {unknown[0]!r}; `dvc stage list` names them")
    needs = upstream_within(graph, request.stages)
    status: dict[str, int] = {}
    pending = list(request.stages)
    while pending:
        failed = {s for s, rc in status.items() if rc != 0}
        for stage in [s for s in pending if needs[s] & failed]:
            status[stage] = -1
            pending.remove(stage)
        wave = [s for s in pending if needs[s] <= set(status)]
        if not wave:
            break
        for stage, rc in zip(wave, submit(wave), strict=True):
            status[stage] = rc
            print(f"{stage}: exit {rc}", flush=True)
        pending = [s for s in pending if s not in status]
    return status


def _exit_status(job) -> int:
    """The stage's exit status, or 1 when the job itself died (killed, out of memory)."""
    try:
        return int(job.result())
    except Exception as exc:  # submitit raises the job's failure here
        print(f"job {job.job_id} failed: {str(exc)[-500:]}", file=sys.stderr)
        return 1


def _submitit(cluster: str) -> Callable[[RunRequest], dict[str, int]]:
    def run(request: RunRequest) -> dict[str, int]:
        import submitit

        root = str(Path(request.repo_root).resolve())
        executor = submitit.AutoExecutor(folder=Path(root, ".submitit"), cluster=cluster)
        resources = Resources.for_profile(request.profile, Path(root, CLUSTER_CONFIG))
        options = {"timeout_min": resources.timeout_min, "cpus_per_task": resources.cpus_per_task,
                   "mem_gb": resources.mem_gb, "name": "mpqbench"}
        if cluster == "slurm":
            options.update(gpus_per_node=resources.gpus_per_node,
                           slurm_array_parallelism=request.jobs,
                           **({"slurm_partition": resources.partition}
                              if resources.partition else {}))
        executor.update_parameters(**options)
        job = StageJob(root, request.dvc)

        def submit(wave: list[str]) -> list[int]:
            return [_exit_status(j) for j in executor.map_array(job, wave)]

        return _waves(request, submit)
    return run


EXECUTORS: Registry[Callable[[RunRequest], dict[str, int]]] = Registry("executor")
EXECUTORS.add("local", _local)
EXECUTORS.add("slurm", _submitit("slurm"))
EXECUTORS.add("submitit-local", _submitit("local"))


def run_stages(executor: str, request: RunRequest) -> dict[str, int]:
    """Run ``request`` on the registered ``executor``; each stage's exit status."""
    if executor != "local":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise MpqbenchError(f"executor {executor!r} needs submitit: pip install "
                                "submitit (or pip install -e '.[cluster]')") from None
    return EXECUTORS.get(executor)(request)
