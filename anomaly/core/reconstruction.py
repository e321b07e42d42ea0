"""A trained model applied to data: what it saw and what it rebuilt, point by point.

Windows are reconstructed in bounded chunks of points, and each point's
overlapping reconstructions are aggregated (median or mean), or taken from
the one window ending at it (``last``, causal). The result, a
:class:`Reconstruction`, is all the :class:`~anomaly.core.scoring.Scorer`
needs: nothing after this step depends on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from anomaly.core.config import WindowConfig
from anomaly.core.windows import aggregate_points, coverage_capacity, sliding_windows, window_starts

CHUNK_POINTS = 16_384


@dataclass(frozen=True)
class Reconstruction:
    """A stretch of data on a model's grid, in scaled units, and the model's reconstruction of it.

    ``missing`` marks points with no value (never scored), ``filled`` points
    whose value was interpolated (scored, never flagged).
    """

    index: pd.DatetimeIndex
    freq: pd.Timedelta
    metrics: tuple[str, ...]
    scaled: np.ndarray  # (n, m) what the model saw
    reconstructed: np.ndarray  # (n, m) what it rebuilt
    missing: np.ndarray  # (n, m) bool
    filled: np.ndarray  # (n, m) bool

    @property
    def unobserved(self) -> np.ndarray:
        """Points that were not really observed (missing or filled): never flagged."""
        return self.missing | self.filled

    def residuals(self) -> np.ndarray:
        """``scaled - reconstructed`` in float64, NaN where missing: all a policy needs to score again."""
        out = np.asarray(self.scaled, dtype=np.float64) - self.reconstructed
        out[self.missing] = np.nan
        return out

    @classmethod
    def from_residuals(
        cls, index: pd.DatetimeIndex, freq: pd.Timedelta, metrics: tuple[str, ...], residuals: np.ndarray, filled: np.ndarray
    ) -> "Reconstruction":
        """The reconstruction :meth:`residuals` came from, as far as any score can tell (errors are |residual|)."""
        missing = np.isnan(residuals)
        return cls(index, freq, metrics, np.where(missing, 0.0, residuals), np.zeros_like(residuals), missing, filled)


def reconstruct(
    model: nn.Module,
    scaled: np.ndarray,
    window: WindowConfig,
    device: torch.device | str = "cpu",
    chunk_points: int = CHUNK_POINTS,
    phase: int = 0,
) -> np.ndarray:
    """Per-point reconstruction ``(n, m)`` of ``scaled`` (n, m), in scaled units.

    Points are processed ``chunk_points`` at a time with only the windows that
    touch the chunk, so memory is bounded by the chunk, not the series.
    ``phase`` aligns the strided windows to absolute time (see
    :func:`~anomaly.core.windows.window_starts`).
    """
    views = sliding_windows(scaled, window.size)
    batch = window.score_batch_size
    if window.aggregate == "last":
        return _reconstruct_causal(model, views, len(scaled), batch, torch.device(device), chunk_points)
    starts = window_starts(len(scaled), window.size, window.score_stride, phase)
    cap = coverage_capacity(window.size, window.score_stride)
    out = np.empty(scaled.shape if scaled.ndim == 2 else (len(scaled), 1), dtype=np.float64)
    model.eval()
    for a in range(0, len(scaled), chunk_points):
        b = min(a + chunk_points, len(scaled))
        lo = int(np.searchsorted(starts, a - window.size + 1))
        hi = int(np.searchsorted(starts, b))
        chunk_starts = starts[lo:hi]
        recon = _reconstruct_windows(model, views, chunk_starts, batch, torch.device(device))
        out[a:b] = aggregate_points(recon, chunk_starts, a, b - a, window.aggregate, cap)
    return out


def _reconstruct_causal(
    model: nn.Module, views: np.ndarray, n: int, batch_size: int, device: torch.device, chunk_points: int
) -> np.ndarray:
    """Each point's reconstruction from the window ending at it (the first window's for its own points).

    That window holds nothing after the point, so the score is causal: the
    same whether or not later data exists, as an alerting system needs.
    """
    size = views.shape[1]
    out = np.empty((n, views.shape[2]), dtype=np.float64)
    model.eval()
    for a in range(0, n, chunk_points):
        b = min(a + chunk_points, n)
        points = np.arange(a, b)
        starts = np.maximum(points - size + 1, 0)
        unique, which = np.unique(starts, return_inverse=True)
        recon = _reconstruct_windows(model, views, unique, batch_size, device)
        out[a:b] = recon[which, points - starts]
    return out


def _reconstruct_windows(
    model: nn.Module, views: np.ndarray, starts: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    parts = []
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            batch = np.ascontiguousarray(views[starts[i : i + batch_size]], dtype=np.float32)
            parts.append(model(torch.from_numpy(batch).to(device)).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.empty((0,) + views.shape[1:], dtype=np.float32)
