"""What the ``params`` stage checks before any other stage may remove an output.

DVC deletes a stage's outputs before it runs the stage's command, so a refusal inside the
command comes too late for the committed records. The ``params`` stage runs first on every
``dvc repro`` (``always_changed``) and, beside the schema check, refuses:

- a **pinned checkpoint** whose bytes no longer match the sha256 beside it (a flipped byte, a
  truncated copy): DVC would otherwise take it for a changed output and rebuild it, re-running
  every stage below it; the fix is the committed copy (``git checkout``);
- an **infeasible budget** anywhere in params.yaml, from the cost model alone (the model built
  without weights, its layers, the candidates and the fixed layers): the error names the
  budget's key path and the largest (ratio) or smallest (size, BitOps) feasible value.

Both take about a second; neither loads data or weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpqbench.artifacts import recorded_sha256, sha256_of
from mpqbench.cost import Budget, layer_costs
from mpqbench.data import DATASETS
from mpqbench.errors import MpqbenchError
from mpqbench.models import build_model
from mpqbench.quant.policy import fixed_layers
from mpqbench.search import check_feasible

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class BudgetUse:
    """A budget as params.yaml declares it, with the candidates of the search that meets it."""

    where: str  # its key path in params.yaml
    budget: Budget
    w_choices: list[int]
    a_choices: list[int]


def _method_budgets(method_cfg: dict[str, Any]) -> list[BudgetUse]:
    uses = []
    for method in ("first_order_ptq", "data_free"):
        cfg = method_cfg.get(method) or {}
        for i, spec in enumerate(cfg.get("budgets") or []):
            uses.append(BudgetUse(f"method_cfg.{method}.budgets[{i}]", Budget.from_dict(spec),
                                  list(cfg["bits"]), [int(cfg["a_bits"])]))
    limpq = method_cfg.get("limpq") or {}
    for i, spec in enumerate(limpq.get("budgets") or []):
        uses.append(BudgetUse(f"method_cfg.limpq.budgets[{i}]", Budget.from_dict(spec),
                              list(limpq["candidates"]), list(limpq["candidates"])))
    return uses


def budget_uses(params: dict[str, Any]) -> list[BudgetUse]:
    """Every budget of params.yaml (the methods', the grid's shared ones, the active profile's
    policy bank) with its search's candidates. A shared budget must be within reach of the
    cheapest candidates any allocator searches (an allocator that cannot reach it, such as
    HAWQ-V3's {4, 8}, shows as an infeasible cell, by design)."""
    method_cfg = params.get("method_cfg") or {}
    uses = _method_budgets(method_cfg)
    w_all = sorted({w for use in uses for w in use.w_choices}) or [2]
    a_all = sorted({a for use in uses for a in use.a_choices}) or [8]
    for name, spec in (params.get("budgets") or {}).items():
        uses.append(BudgetUse(f"budgets.{name}", Budget.from_dict(spec), w_all, a_all))
    bank = (params["profiles"][params["profile"]].get("policy_bank") or {})
    if bank.get("budget"):
        uses.append(BudgetUse(f"profiles.{params['profile']}.policy_bank.budget",
                              Budget.from_dict(bank["budget"]), list(bank["bits"]),
                              [int(bank["a_bits"])]))
    return uses


def check_budgets_feasible(params: dict[str, Any]) -> None:
    """Refuse params.yaml when any budget is out of reach for any model of ``models``."""
    spec = DATASETS.get(params["dataset"])
    uses = budget_uses(params)
    for model_name in params["models"]:
        layers = layer_costs(build_model(model_name, spec.num_classes), spec.input_shape)
        fixed = fixed_layers(layers, params)
        for use in uses:
            try:
                check_feasible(layers, use.budget, use.w_choices, use.a_choices, fixed)
            except MpqbenchError as exc:
                raise MpqbenchError(
                    f"params.yaml {use.where} for {model_name}: {exc}; lower it or widen the "
                    f"candidates ({use.w_choices})") from None


def check_pinned_checkpoints(params: dict[str, Any], repo: str | Path = ".") -> None:
    """Every committed ``checkpoints/<model>.pt`` of ``models`` still has the bytes its
    ``.sha256`` records (a missing pair is fine: the checkpoint stage will build it)."""
    for model_name in params["models"]:
        path = Path(repo, CHECKPOINT_DIR, f"{model_name}.pt")
        expected = recorded_sha256(path)
        if not path.is_file() or expected is None:
            continue
        actual = sha256_of(path)
        if actual != expected:
            pinned = f"{CHECKPOINT_DIR}/{model_name}.pt"
            raise MpqbenchError(
                f"{pinned} is corrupt: its sha256 is {actual[:12]}..., the pinned one is "
                f"{expected[:12]}...; restore the committed copy with `git checkout -- {pinned} "
                f"{pinned}.sha256` (nothing was run or removed). To rebuild it on purpose "
                f"instead, delete both files and run `dvc repro checkpoint@{model_name}`")


def preflight(params: dict[str, Any], repo: str | Path = ".") -> None:
    """The checks beyond the schema that the params stage makes; see the module doc."""
    check_pinned_checkpoints(params, repo)
    check_budgets_feasible(params)
