"""Sensitivity metrics, one module each, registered by name in ``METRICS``.

Every metric returns a ``SensitivityTable``: a tidy frame ``layer, w_bits, a_bits, score``
(lower = less harmful, additive over layers) plus the measured cost of producing it.
"""

from mpqbench.sensitivity import (  # noqa: F401 (registers the metrics)
    first_order,
    fisher_fit,
    hessian_trace,
    task_loss,
    zeroq_kl,
)
from mpqbench.sensitivity.base import (
    METRICS,
    SensitivityContext,
    SensitivityTable,
    compute,
    metric_options,
    restrict_table,
)

__all__ = ["METRICS", "SensitivityContext", "SensitivityTable", "compute",
           "metric_options", "restrict_table"]
