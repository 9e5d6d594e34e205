"""Protocols turn a policy into a quantized model; ``run_policy`` turns that into a RunRecord.

An allocator (a sensitivity metric plus a solver, learned indicators, or a uniform width)
produces an ``Allocation``: bits per layer and how they were chosen. A protocol of the
``PROTOCOLS`` registry consumes it: ``ptq-nearest`` and ``ptq-adaround`` (``mpqbench.ptq``,
one per registered rounding), ``qat_lsq`` and ``qat_saq`` (``mpqbench.qat``). ``run_policy`` is
the only place that connects the two, evaluates on the context's test images, builds the
RunRecord and saves it. Run ids are spelled in ``mpqbench.naming`` only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from mpqbench.context import Context
from mpqbench.cost import Bits, Budget, parse_wa
from mpqbench.data import Split
from mpqbench.errors import MpqbenchError
from mpqbench.evaluate import EvalResult
from mpqbench.ptq import ROUNDINGS, run_ptq
from mpqbench.qat import QAT_PROTOCOLS, loss_curve, run_qat
from mpqbench.registry import Registry
from mpqbench.results import RunRecord, save_run
from mpqbench.runs import quantized_run_record
from mpqbench.search import search, uniform_bits
from mpqbench.sensitivity import SensitivityTable
from mpqbench.train import QatConfig


@dataclass
class Allocation:
    """What an allocator produced: bits per layer and how they were chosen.

    ``metric``/``solver``: the allocator's parts (``solver="uniform"`` for a uniform width);
    ``budget``: ``Budget.describe()`` of the budget it was solved for; ``seconds``: the
    allocator's wall time by phase (``sensitivity_s``, ``search_s``); ``extra``: what the
    RunRecord keeps besides (solver status, objective, the metric's own report, ...).
    """

    bits: Bits
    metric: str | None = None
    solver: str | None = None
    budget: dict[str, Any] | None = None
    bit_candidates: list[int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def uniform_allocation(ctx: Context, config: str) -> Allocation:
    """Every searchable layer at ``config`` (``"W4A8"``), the fixed layers at their bits."""
    w_bits, a_bits = parse_wa(config)
    return Allocation(uniform_bits(ctx.layers, w_bits, a_bits, ctx.fixed), solver="uniform",
                      extra={"config": config})


def search_allocation(ctx: Context, table: SensitivityTable, budget: Budget,
                      solver: str = "ilp") -> Allocation:
    """Solve ``table`` under ``budget`` with ``solver`` (``mpqbench.search.SOLVERS``)."""
    found = search(solver, table.frame, ctx.layers, budget, ctx.fixed)
    return Allocation(
        found.bits, metric=table.metric, solver=found.solver, budget=budget.describe(),
        bit_candidates=sorted({int(b) for b in table.frame.w_bits}),
        seconds={"sensitivity_s": table.seconds, "search_s": found.seconds},
        extra={"sensitivity_cost": table.cost(), "sensitivity_extra": table.extra,
               "solver_status": found.status, "objective": found.objective,
               "totals": found.totals})


@dataclass
class ProtocolOutput:
    """A protocol's quantized model (eval mode), its wall seconds by phase (``protocol_s``
    always), what the RunRecord keeps of it (``extra``) and the protocol's own result
    (``PtqResult`` or ``QatResult``) for plots."""

    model: nn.Module
    seconds: dict[str, float]
    extra: dict[str, Any]
    result: Any


@dataclass(frozen=True)
class PtqProtocol:
    """Post-training quantization with a registered rounding (``mpqbench.ptq``)."""

    rounding: str
    options: tuple[str, ...] = ()

    def run(self, ctx: Context, bits: Bits, seed: int, *, options: dict[str, Any],
            calibration: Split | list[torch.Tensor] | None, qat: QatConfig | None,
            resume_path: str | None, desc: str) -> ProtocolOutput:
        ptq = run_ptq(ctx.model, bits, ctx.splits.train if calibration is None else calibration,
                      ctx.splits.input_shape, self.rounding, ctx.profile.ptq, ctx.device, seed)
        return ProtocolOutput(
            ptq.model, {"protocol_s": ptq.seconds["total_s"], **ptq.seconds},
            {"ptq": ctx.profile.ptq.to_dict(), "rounding": self.rounding,
             "calibration": "train" if calibration is None else "given batches",
             "layer_stats": ptq.layer_stats}, ptq)


@dataclass(frozen=True)
class QatProtocol:
    """LSQ quantization-aware training with a registered training step (``mpqbench.qat``)."""

    name: str
    options: tuple[str, ...] = ()

    def run(self, ctx: Context, bits: Bits, seed: int, *, options: dict[str, Any],
            calibration: Split | list[torch.Tensor] | None, qat: QatConfig | None,
            resume_path: str | None, desc: str) -> ProtocolOutput:
        if calibration is not None:
            raise MpqbenchError(f"{self.name} trains on the train split; it takes no "
                                "calibration batches")
        config = ctx.profile.qat(seed=seed) if qat is None else qat
        trained = run_qat(self.name, ctx.model, bits, ctx.splits.train, ctx.splits.input_shape,
                          config, ctx.device, options, resume_path, desc=desc, frozen=ctx.fixed)
        return ProtocolOutput(
            trained.model,
            {"protocol_s": trained.seconds, "train_s_per_step": trained.seconds_per_step()},
            {"qat": asdict(config), "step": type(trained.step).__name__,
             "step_options": options, "forward_passes": trained.step.forward_passes,
             "loss_curve": loss_curve(trained.history)}, trained)


Protocol = PtqProtocol | QatProtocol
PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _rounding in ROUNDINGS.names():
    PROTOCOLS.add(f"ptq-{_rounding}", PtqProtocol(_rounding))
PROTOCOLS.add("qat_lsq", QatProtocol("qat_lsq"))
PROTOCOLS.add("qat_saq", QatProtocol("qat_saq", ("rho", "case", "every", "probability",
                                                 "perturb_space", "perturb_steps")))
assert set(QAT_PROTOCOLS.names()) <= set(PROTOCOLS.names())


@dataclass
class RunOutcome:
    """A finished run: its RunRecord (saved when the context has a ``runs_dir``), the test
    evaluation and the protocol's output."""

    record: RunRecord
    evaluation: EvalResult
    output: ProtocolOutput

    def row(self, **labels: Any) -> dict[str, Any]:
        """One table row: ``labels``, the run id, cost, accuracy and search seconds."""
        return {**labels, "run_id": self.record.run_id, **self.record.cost,
                **self.record.accuracy, "search_s": self.record.timing.get("search_s", 0.0)}


def run_policy(ctx: Context, allocation: Allocation, protocol: str, seed: int | None = None, *,
               method: str, run_id: str, options: dict[str, Any] | None = None,
               qat: QatConfig | None = None,
               calibration: Split | list[torch.Tensor] | None = None,
               extra: dict[str, Any] | None = None, resume_dir: str | None = ".resume",
               ) -> RunOutcome:
    """Quantize ``ctx.model`` to ``allocation`` with ``protocol``, evaluate on test, record.

    ``seed``: the protocol's seed (PTQ's calibration draw and AdaRound's init, QAT's batch
    order and SAQ's draws); default the profile's. ``options``: the protocol's step options
    (``qat_saq``: rho, case, ...). ``qat``: a QAT schedule other than the profile's.
    ``calibration``: PTQ's batches or split (default: train). An interrupted QAT run resumes
    from ``resume_dir/<run_id>.pt``. Every option is checked before any compute.
    """
    chosen = PROTOCOLS.get(protocol)
    seed = ctx.seed if seed is None else seed
    options = dict(options or {})
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        raise MpqbenchError(f"{protocol}: unknown options {unknown}; it takes "
                            f"{list(chosen.options) or 'none'}")
    if qat is not None and isinstance(chosen, PtqProtocol):
        raise MpqbenchError(f"{protocol} is post-training; a QAT schedule does not apply")
    if qat is not None and qat.seed != seed:
        raise MpqbenchError(f"the QAT schedule's seed {qat.seed} is not the run's seed {seed}")
    start = time.perf_counter()
    resume = f"{resume_dir}/{run_id}.pt" if resume_dir else None
    output = chosen.run(ctx, allocation.bits, seed, options=options, calibration=calibration,
                        qat=qat, resume_path=resume, desc=run_id)
    evaluation = ctx.evaluate(output.model, desc=f"{run_id} test")
    before = sum(allocation.seconds.values())
    record = quantized_run_record(
        run_id=run_id, method=method, model_name=ctx.model_name, splits=ctx.splits,
        layers=ctx.layers, bits=allocation.bits, result=evaluation, fp_top1=ctx.fp_top1,
        protocol=protocol, settings={"seed": seed, "profile": ctx.profile.name},
        device=ctx.device, fixed=ctx.fixed, metric=allocation.metric, solver=allocation.solver,
        budget=allocation.budget, bit_candidates=allocation.bit_candidates,
        timing={**allocation.seconds, **output.seconds,
                "total_s": before + time.perf_counter() - start},
        extra={**allocation.extra, **output.extra, **(extra or {})})
    if ctx.runs_dir is not None:
        save_run(record, ctx.runs_dir)
    return RunOutcome(record, evaluation, output)
