"""Uniform baselines: every searchable layer at one (w_bits, a_bits), through the PTQ protocol.

The first conv and the last linear stay at W8A8 (``quant.policy.default_fixed``; params.yaml
``fix_first_last: false`` puts them at the uniform width too), as in every other method, so a
uniform run and a mixed-precision run at the same size differ only in how the bits are spread.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from mpqbench.cost import layer_costs, parse_wa
from mpqbench.data import Splits
from mpqbench.evaluate import evaluate
from mpqbench.ptq import PtqConfig, PtqResult, run_ptq
from mpqbench.quant.policy import fixed_layers
from mpqbench.results import RunRecord
from mpqbench.runs import quantized_run_record
from mpqbench.search import uniform_bits


def uniform_ptq_run(
    model: nn.Module, splits: Splits, model_name: str, settings: dict[str, Any],
    device: torch.device | str, fp_top1: float, config: str, rounding: str,
    method: str = "uniform", run_id: str | None = None,
) -> tuple[RunRecord, PtqResult]:
    """One uniform PTQ run, e.g. ``config="W4A8"``, ``rounding="adaround"``, evaluated on test.

    ``settings``: a profile's settings (``ptq``, ``eval``, ``seed``, ``profile``);
    ``fp_top1``: the FP model's top-1 on the same test images, in percent.
    """
    start = time.perf_counter()
    w_bits, a_bits = parse_wa(config)
    layers = layer_costs(model, splits.input_shape)
    fixed = fixed_layers(layers, settings)
    bits = uniform_bits(layers, w_bits, a_bits, fixed)
    ptq_config = PtqConfig.from_dict(settings.get("ptq"))
    ptq = run_ptq(model, bits, splits.train, splits.input_shape, rounding, ptq_config, device,
                  settings["seed"])
    eval_cfg = settings["eval"]
    result = evaluate(ptq.model, splits.test, eval_cfg["batch_size"], device,
                      eval_cfg.get("max_images"), desc=f"{config} {rounding}")
    record = quantized_run_record(
        run_id=run_id or f"{method}-{model_name}-W{w_bits}A{a_bits}-{rounding}",
        method=method, model_name=model_name, splits=splits, layers=layers, bits=bits,
        result=result, fp_top1=fp_top1, protocol=f"ptq-{rounding}", settings=settings,
        device=device, fixed=fixed, solver="uniform",
        timing={"protocol_s": ptq.seconds["total_s"], **ptq.seconds,
                "total_s": time.perf_counter() - start},
        extra={"ptq": ptq_config.to_dict(), "rounding": rounding, "config": config,
               "layer_stats": ptq.layer_stats},
    )
    return record, ptq
