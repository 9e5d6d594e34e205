"""Uniform baselines: every searchable layer at one (w_bits, a_bits), through a PTQ protocol.

The first conv and the last linear stay at W8A8 (``quant.policy.default_fixed``; params.yaml
``fix_first_last: false`` puts them at the uniform width too), as in every other method, so a
uniform run and a mixed-precision run at the same size differ only in how the bits are spread.
"""

from __future__ import annotations

import pandas as pd

from mpqbench.context import Context
from mpqbench.naming import run_id
from mpqbench.protocols import run_policy, uniform_allocation


def uniform_grid(ctx: Context, configs: list[str], roundings: list[str],
                 method: str = "uniform") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every ``config`` (``"W4A8"``) with every PTQ ``rounding``; run ids
    ``<method>-<model>-<config>-<rounding>``.

    Returns one row per run (cost, accuracy, PTQ seconds, evaluation throughput) and AdaRound's
    per-layer statistics (one row per config and layer: the share of weights rounded away from
    nearest, the reconstruction error)."""
    rows, stats = [], []
    for config in configs:
        for rounding in roundings:
            outcome = run_policy(ctx, uniform_allocation(ctx, config), f"ptq-{rounding}",
                                 method=method, run_id=run_id(method, ctx.model_name, config,
                                                              rounding))
            record = outcome.record
            rows.append({"config": config, "rounding": rounding, **record.cost,
                         **record.accuracy, "ptq_s": record.timing["protocol_s"],
                         "eval_images_per_s": record.timing["eval_images_per_s"]})
            if rounding == "adaround":
                stats += [{"config": config, "layer": layer, **values}
                          for layer, values in outcome.output.result.layer_stats.items()]
    return pd.DataFrame(rows), pd.DataFrame(stats)
