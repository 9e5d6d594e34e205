"""Range observers: they watch tensors and turn what they saw into a scale and zero point.

- ``minmax``: the running minimum and maximum over every observed batch;
- ``percentile``: the (100 - p)-th and p-th percentiles of each batch, averaged over batches
  (clips rare outliers of activations);
- ``mse``: the clipping range ``alpha * [min, max]`` whose quantization error (mean squared)
  on the observed values is smallest, ``alpha`` searched on a grid (as in Banner et al. 2019
  and Nagel et al. 2021's white paper, sec. 3.4).

Per-channel schemes get one range per slice along ``scheme.axis`` (weights); per-tensor
schemes one range (activations). Observers are plain objects, not modules: nothing of them is
saved in a model's state dict, only the scale and zero point they produce.
"""

from __future__ import annotations

import torch

from mpqbench.errors import MpqbenchError
from mpqbench.quant.quantizers import QuantScheme, fake_quantize, scale_zero_point
from mpqbench.registry import Registry

OBSERVERS: Registry[type[Observer]] = Registry("observer")
QUANTILE_MAX_ELEMENTS = 2**24  # torch.quantile refuses larger inputs


def _rows(x: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """``x`` as (channels, values) for per-channel schemes, (1, values) otherwise."""
    x = x.detach().float()
    if scheme.per_channel:
        return x.transpose(0, scheme.axis).reshape(x.shape[scheme.axis], -1)
    return x.reshape(1, -1)


def _squeeze(v: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    return v if scheme.per_channel else v.reshape(())


class Observer:
    """Base: ``observe(x)`` any number of times, then ``qparams()`` -> (scale, zero_point)."""

    def __init__(self, scheme: QuantScheme) -> None:
        self.scheme = scheme
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        self._observe(_rows(x, self.scheme))
        self.batches += 1

    def _observe(self, rows: torch.Tensor) -> None:
        raise NotImplementedError

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi), shapes () or (C,)."""
        raise NotImplementedError

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batches == 0:
            raise MpqbenchError("observer saw no data; run calibration batches through the model")
        lo, hi = self.range()
        return scale_zero_point(_squeeze(lo, self.scheme), _squeeze(hi, self.scheme), self.scheme)


@OBSERVERS.register("minmax")
class MinMaxObserver(Observer):
    def __init__(self, scheme: QuantScheme) -> None:
        super().__init__(scheme)
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def _observe(self, rows: torch.Tensor) -> None:
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, self.hi


@OBSERVERS.register("percentile")
class PercentileObserver(Observer):
    def __init__(self, scheme: QuantScheme, percentile: float = 99.99) -> None:
        super().__init__(scheme)
        if not 50 < percentile <= 100:
            raise MpqbenchError(f"percentile {percentile} must lie in (50, 100]")
        self.q = torch.tensor([1 - percentile / 100, percentile / 100])
        self.sum: torch.Tensor | None = None

    def _observe(self, rows: torch.Tensor) -> None:
        stride = -(-rows.numel() // QUANTILE_MAX_ELEMENTS)
        rows = rows[:, ::stride]  # a deterministic subsample where torch.quantile needs one
        bounds = torch.quantile(rows, self.q.to(rows.device), dim=1)  # (2, C)
        self.sum = bounds if self.sum is None else self.sum + bounds

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / self.batches
        return mean[0], mean[1]


@OBSERVERS.register("mse")
class MseObserver(Observer):
    """Keeps a strided sample of the observed values (at most ``samples_per_batch`` a batch)."""

    def __init__(self, scheme: QuantScheme, grid: int = 100,
                 samples_per_batch: int = 2**16) -> None:
        super().__init__(scheme)
        self.grid = grid
        self.samples_per_batch = samples_per_batch
        self.kept: list[torch.Tensor] = []

    def _observe(self, rows: torch.Tensor) -> None:
        if not self.scheme.per_channel:
            stride = -(-rows.shape[1] // self.samples_per_batch)
            rows = rows[:, ::stride]
        self.kept.append(rows.contiguous())

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.cat(self.kept, dim=1)
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        best_err = torch.full_like(lo, float("inf"))
        best_lo, best_hi = lo.clone(), hi.clone()
        for alpha in torch.linspace(1.0 / self.grid, 1.0, self.grid).tolist():
            scale, zero = scale_zero_point(alpha * lo, alpha * hi, self.scheme)
            deq = fake_quantize(rows, scale, zero, self.scheme.qmin, self.scheme.qmax, axis=0)
            err = (deq - rows).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, alpha * lo, best_lo)
            best_hi = torch.where(better, alpha * hi, best_hi)
        return best_lo, best_hi


def make_observer(name: str, scheme: QuantScheme) -> Observer:
    """An observer by registry name (minmax, percentile, mse) for ``scheme``."""
    return OBSERVERS.get(name)(scheme)
