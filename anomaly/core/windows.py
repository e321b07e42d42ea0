"""Sliding windows over a series, and mapping window outputs back to points.

Windows are *views* (``sliding_window_view``), never copies of the series
times the window length, so memory stays flat however long the series is;
only a batch at a time is ever copied. The reverse mapping aggregates, for
each point, the reconstructions of every window that covers it.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from anomaly.core.config import WindowConfig
from anomaly.errors import DataError


def sliding_windows(values: np.ndarray, size: int) -> np.ndarray:
    """Read-only view of shape ``(n - size + 1, size, n_metrics)`` over ``values`` (n, n_metrics)."""
    x = np.asarray(values)
    if x.ndim == 1:
        x = x[:, None]
    if len(x) < size:
        raise DataError(f"{len(x)} points are fewer than one window (size {size})")
    return sliding_window_view(x, size, axis=0).transpose(0, 2, 1)


def window_starts(n_points: int, size: int, stride: int, phase: int = 0) -> np.ndarray:
    """Start index of every window taken every ``stride`` points, from ``phase``.

    The first window always starts at 0 and the last is always aligned to the
    end of the series, so with any stride up to ``size`` every point is
    covered. ``phase`` lets callers align the strided windows to absolute
    time, so the same points get the same windows whatever the series starts.
    """
    if size < 1 or stride < 1:
        raise DataError(f"window size and stride must be >= 1, got size={size}, stride={stride}")
    if n_points < size:
        raise DataError(f"{n_points} points are fewer than one window (size {size})")
    starts = np.arange(phase % stride, n_points - size + 1, stride, dtype=np.int64)
    if len(starts) == 0 or starts[0] != 0:
        starts = np.insert(starts, 0, 0)
    if starts[-1] != n_points - size:
        starts = np.append(starts, n_points - size)
    return starts


#: The most of a training window that may be missing (default a quarter), when gap-free
#: windows are too few (see :func:`training_starts`); those points stay out of the loss.
#: Irregularly sampled metrics (10-minute spacing with frequent 20-60 minute gaps) leave
#: few gap-free windows, yet most of their windows miss less than a quarter.
MAX_MISSING_FRACTION = 0.25
#: Gap-free windows are trained on alone while they are at least this share of all
#: candidate windows (default half): then they still cover most of the series.
MIN_GAP_FREE_SHARE = 0.5


def training_starts(n_points: int, window: WindowConfig, missing: np.ndarray | None = None) -> np.ndarray:
    """Window starts a model trains on: every ``train_stride`` points, gap-free where that is most of them.

    The stride widens so there are at most ``max_train_windows`` windows
    (long histories cost bounded time per epoch). Windows that contain a
    missing point (``missing`` is a boolean per point) are dropped, unless
    fewer than :data:`MIN_GAP_FREE_SHARE` of the windows are gap-free: then
    windows with up to :data:`MAX_MISSING_FRACTION` of their points missing
    are kept too, so an irregular series trains on all of itself rather than
    on the few stretches its gaps spare (or not at all). May be empty.
    """
    n_windows = n_points - window.size + 1
    stride = window.train_stride
    if window.max_train_windows is not None:
        stride = max(stride, math.ceil(n_windows / window.max_train_windows))
    starts = window_starts(n_points, window.size, stride)
    if missing is None or not missing.any():
        return starts
    counts = missing_counts(starts, window.size, missing)
    gap_free = starts[counts == 0]
    if len(gap_free) >= MIN_GAP_FREE_SHARE * len(starts):
        return gap_free
    return starts[counts <= MAX_MISSING_FRACTION * window.size]


def missing_counts(starts: np.ndarray, size: int, missing: np.ndarray) -> np.ndarray:
    """How many points of each window (starting at ``starts``, ``size`` long) are ``missing``."""
    counts = np.concatenate(([0], np.cumsum(missing, dtype=np.int64)))
    return counts[starts + size] - counts[starts]


def coverage_capacity(size: int, stride: int) -> int:
    """The most windows (from :func:`window_starts`) that can cover one point."""
    return -(-size // stride) + 2


def aggregate_points(
    reconstructions: np.ndarray,
    starts: np.ndarray,
    first_point: int,
    n_points: int,
    method: Literal["median", "mean"] = "median",
    capacity: int | None = None,
) -> np.ndarray:
    """Per-point aggregate of overlapping window outputs.

    ``reconstructions`` has shape ``(k, size, m)``: window ``i`` starts at point
    ``starts[i]`` (sorted ascending). Returns ``(n_points, m)`` for points
    ``first_point .. first_point + n_points - 1``: the median or mean over all
    windows covering each point; NaN where no window covers it. Callers that
    score a long series call this chunk by chunk with the windows that touch
    the chunk, which keeps memory bounded.
    """
    recon = np.asarray(reconstructions, dtype=np.float64)
    k, size, m = recon.shape
    if len(starts) != k:
        raise DataError(f"{len(starts)} window starts for {k} reconstructions")
    if k == 0:
        return np.full((n_points, m), np.nan)
    if method == "mean":
        return _mean_points(recon, starts, first_point, n_points)
    cap = capacity or _max_coverage(starts, size)
    points = starts[:, None] + np.arange(size)[None, :] - first_point  # (k, size)
    slots = np.broadcast_to((np.arange(k) % cap)[:, None], points.shape)
    inside = (points >= 0) & (points < n_points)
    buffer = np.full((n_points, cap, m), np.nan)
    buffer[points[inside], slots[inside]] = recon[inside]
    return _nan_median(buffer)


def _mean_points(recon: np.ndarray, starts: np.ndarray, first_point: int, n_points: int) -> np.ndarray:
    k, size, m = recon.shape
    points = (starts[:, None] + np.arange(size)[None, :] - first_point).ravel()
    inside = (points >= 0) & (points < n_points)
    sums = np.zeros((n_points, m))
    counts = np.zeros(n_points)
    np.add.at(sums, points[inside], recon.reshape(-1, m)[inside])
    np.add.at(counts, points[inside], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _max_coverage(starts: np.ndarray, size: int) -> int:
    """Largest number of windows in ``starts`` that overlap one point."""
    return int(np.max(np.searchsorted(starts, starts + size) - np.arange(len(starts))))


def _nan_median(buffer: np.ndarray) -> np.ndarray:
    """Median over axis 1 ignoring NaN, vectorised (np.nanmedian loops in Python on small axes)."""
    ordered = np.sort(buffer, axis=1)  # NaN sort last
    count = np.sum(~np.isnan(buffer), axis=1)  # (n, m)
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, None)
    low = np.take_along_axis(ordered, lo[:, None, :], axis=1)[:, 0, :]
    high = np.take_along_axis(ordered, hi[:, None, :], axis=1)[:, 0, :]
    out = (low + high) / 2.0
    out[count == 0] = np.nan
    return out
