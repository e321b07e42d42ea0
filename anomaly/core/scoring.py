"""From a fitted model to per-point anomaly scores.

Windows are reconstructed in bounded chunks of points, each point's
overlapping reconstructions are aggregated (median or mean), and the point's
error in scaled units is its score per metric; metrics are then combined into
one score, optionally smoothed and optionally measured against its recent
baseline (:func:`standardise`). Nothing here is fitted: a model trained
yesterday scores today's data with exactly the state it saved.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from anomaly.core.config import ScoringConfig, WindowConfig
from anomaly.core.windows import (
    aggregate_points,
    coverage_capacity,
    sliding_windows,
    window_starts,
)

CHUNK_POINTS = 16_384
# The combined score's column, beside the metrics' own, in a carry (see :class:`Scores`).
COMBINED = "anomaly_score"
# Prefix of a carry column counting the points that stay out of that score's baseline (see :func:`baseline_scores`).
HELD = "held:"


@dataclass(frozen=True)
class Scores:
    """Scores on the data's own index (the *scores* data contract).

    ``metric_scores`` holds one column per metric, ``score`` the combined
    score, ``flags``/``metric_flags`` where they exceed their thresholds.
    Filled or missing points are never flagged. ``reconstruction`` is in the
    metrics' own units so it can be drawn over the data.

    ``carry`` is what the next score of the same model continues from: the
    smoothed errors before the baseline (one column per metric and
    :data:`COMBINED`), as many points as the baseline looks back (at least
    one, the smoothing's state), ending one window before the last point
    scored, because the last window's reconstructions can still change when
    later points arrive. A scheduled run that passes it on reads only the
    windows' context again, and its scores equal those of one score over
    everything. None when no point is settled yet.
    """

    values: pd.DataFrame
    reconstruction: pd.DataFrame
    metric_scores: pd.DataFrame
    score: pd.Series
    thresholds: dict[str, float]
    threshold: float
    metric_flags: pd.DataFrame
    flags: pd.Series
    filled: pd.DataFrame
    carry: pd.DataFrame | None = None

    @property
    def metrics(self) -> list[str]:
        return [str(c) for c in self.values.columns]

    def to_frame(self) -> pd.DataFrame:
        """One row per timestamp: values, reconstructions, per-metric scores, combined score, threshold, flag.

        Reconstructions (``reconstruction_<metric>``) are kept so a report can
        draw what the model expected next to what happened.
        """
        parts = [self.values, self.reconstruction.add_prefix("reconstruction_")]
        if len(self.metrics) > 1:
            parts.append(self.metric_scores.add_prefix("score_"))
        out = pd.concat(parts, axis=1)
        out["anomaly_score"] = self.score
        out["threshold"] = self.threshold
        out["flag"] = self.flags.astype(bool)
        out["filled"] = self.filled.any(axis=1)
        out.index.name = "timestamp"
        return out


def reconstruct(
    model: nn.Module,
    scaled: np.ndarray,
    window: WindowConfig,
    scoring: ScoringConfig,
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
    if scoring.aggregate == "last":
        return _reconstruct_causal(model, views, len(scaled), scoring.batch_size, torch.device(device), chunk_points)
    starts = window_starts(len(scaled), window.size, window.score_stride, phase)
    cap = coverage_capacity(window.size, window.score_stride)
    out = np.empty(scaled.shape if scaled.ndim == 2 else (len(scaled), 1), dtype=np.float64)
    model.eval()
    for a in range(0, len(scaled), chunk_points):
        b = min(a + chunk_points, len(scaled))
        lo = int(np.searchsorted(starts, a - window.size + 1))
        hi = int(np.searchsorted(starts, b))
        chunk_starts = starts[lo:hi]
        recon = _reconstruct_windows(model, views, chunk_starts, scoring.batch_size, torch.device(device))
        out[a:b] = aggregate_points(recon, chunk_starts, a, b - a, scoring.aggregate, cap)
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


#: The exponent each named error kind applies to |d|; ``power`` takes it from its argument.
ERROR_EXPONENTS = {"abs": 1.0, "squared": 2.0}


def point_errors(scaled: np.ndarray, reconstruction: np.ndarray, kind: str = "abs", power: float = 1.0) -> np.ndarray:
    """Point-wise reconstruction error per metric, in scaled units: |d| raised to the kind's exponent.

    ``kind`` is ``abs`` (|d|), ``squared`` (d²) or ``power`` (|d| ** ``power``).
    """
    diff = np.abs(np.asarray(scaled, dtype=np.float64) - reconstruction)
    exponent = ERROR_EXPONENTS.get(kind, power)
    return diff if exponent == 1.0 else diff**exponent


def combine(errors: np.ndarray, how: str = "mean") -> np.ndarray:
    """One score per point from per-metric errors; NaN only where every metric is NaN."""
    if errors.shape[1] == 1:
        return errors[:, 0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN, quietly
        return np.nanmax(errors, axis=1) if how == "max" else np.nanmean(errors, axis=1)


def smooth(errors: np.ndarray, span: int, start: np.ndarray | None = None) -> np.ndarray:
    """Causal exponentially weighted mean over time (per column); ``span`` 0 or 1 leaves it.

    ``start`` is the smoothed value of the point before the first (per
    column; NaN starts that column afresh): a mean continued from it equals
    the one over the whole series, so earlier points need not be read again.
    """
    if span <= 1:
        return errors
    table = np.asarray(errors, dtype=np.float64).reshape(len(errors), -1)
    if start is not None:
        table = np.vstack([np.reshape(start, (1, -1)), table])
    smoothed = pd.DataFrame(table).ewm(span=span, adjust=False, ignore_na=True).mean().to_numpy(copy=True)
    if start is not None:
        smoothed = smoothed[1:]
    smoothed = smoothed.reshape(np.shape(errors))
    smoothed[np.isnan(errors)] = np.nan
    return smoothed


def last_observed(rows: np.ndarray) -> np.ndarray:
    """The last non-NaN value of each column of ``rows`` (NaN where a column has none)."""
    table = np.asarray(rows, dtype=np.float64)
    if len(table) == 0:
        return np.full(table.shape[1:], np.nan)
    return pd.DataFrame(table).ffill().to_numpy()[-1]


def baseline_minimum(window: int, warmup: int = 0) -> int:
    """Points of history a baseline of ``window`` points needs before it gives a score.

    A quarter of the window, or ``warmup`` points if more, but never more
    than the window itself (which would never be reached).
    """
    return min(max(2, window // 4, warmup), max(window, 2))


def standardise(scores: np.ndarray, window: int, floor: float, **options: Any) -> np.ndarray:
    """How far each score is above its trailing baseline, in the baseline's standard deviations.

    The baseline of a point is the observed scores among the ``window`` points
    before it (never the point itself or anything later, so the result is
    causal; gaps leave fewer). Its standard
    deviation is raised to ``floor`` so a near-constant baseline cannot turn
    noise into huge scores. Scores below the baseline mean are 0: only rises
    are anomalous here. NaN where the score is NaN or fewer than ``minimum``
    (default :func:`baseline_minimum`) earlier scores exist. ``scores`` is
    ``(n,)`` or ``(n, m)`` (per column). ``options`` are
    :func:`baseline_scores`'s (``minimum``, ``exclude``, ``hold``, ``held``).
    """
    return baseline_scores(scores, window, floor, **options)[0]


def baseline_scores(
    scores: np.ndarray,
    window: int,
    floor: float,
    *,
    minimum: int | None = None,
    exclude: float | None = None,
    hold: int = 0,
    held: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`standardise`'s result, and how long each point is kept out of later baselines.

    With ``exclude``, a point whose result is above it leaves the baselines
    of the points after it, and so do the ``hold`` points that follow it
    (a later such point starts the hold again). The second result counts,
    per point, the points from it on that are out because of it or an
    earlier one (``hold + 1`` at the point itself, then one less per point;
    0 for a point in the baselines). ``held`` gives those counts for the
    first ``len(held)`` rows, as an earlier run left them (see
    ``Scores.carry``): those rows are not judged again, so a run continued
    from a carry excludes what one run over everything would.
    """
    table = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    counts = np.zeros(table.shape, dtype=np.int64)
    known = 0 if held is None else len(held)
    if known:
        counts[:known] = np.asarray(held, dtype=np.int64).reshape(known, -1)
    minimum = baseline_minimum(window) if minimum is None else minimum
    out = np.column_stack(
        [_baseline_column(table[:, j], counts[:, j], known, window, floor, minimum, exclude, hold) for j in range(table.shape[1])]
    )
    return out.reshape(np.shape(scores)), counts.reshape(np.shape(scores))


def against_baseline(
    series: np.ndarray, scoring: ScoringConfig, freq: pd.Timedelta, held: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`baseline_scores` under ``scoring``'s baseline settings, the durations in points of ``freq``."""
    return baseline_scores(
        series,
        scoring.baseline,
        scoring.baseline_floor,
        minimum=baseline_minimum(scoring.baseline, scoring.warmup_points(freq)),
        exclude=scoring.baseline_exclude,
        hold=scoring.hold_points(freq),
        held=held,
    )


def _baseline_column(
    s: np.ndarray, counts: np.ndarray, known: int, window: int, floor: float, minimum: int, exclude: float | None, hold: int
) -> np.ndarray:
    """One column of :func:`baseline_scores`; fills ``counts[known:]`` in place.

    Vectorised between exclusions: the scores are computed once with what is
    known to be out, and only the stretch a new exclusion can reach (its
    hold and one baseline window after it) is computed again, so a series
    with few anomalies costs a few rolling passes, not a Python loop.
    """
    base = s.copy()
    base[:known][counts[:known] > 0] = np.nan
    z = _rolling_z(s, base, window, floor, minimum, 0, len(s))
    if exclude is None:
        return z
    t, remaining = known, int(counts[known - 1]) - 1 if known else 0
    while t < len(s):
        if remaining <= 0:
            above = np.flatnonzero(z[t:] > exclude)
            if len(above) == 0:
                break
            t, remaining = t + int(above[0]), 1  # the first point above: out itself, the block below judges its hold
        stop = min(len(s), t + remaining)
        base[t:stop] = np.nan  # out whatever their scores, so their scores are final once computed again
        end = min(len(s), stop + window)  # no later point's baseline reaches the rows just taken out
        z[t:end] = _rolling_z(s, base, window, floor, minimum, t, end)
        rows = np.arange(t, stop)
        flagged = np.where(z[t:stop] > exclude, rows, -1)
        last = np.maximum.accumulate(flagged)
        counts[t:stop] = np.where(last >= 0, hold + 1 - (rows - last), 0)
        counts[t:stop] = np.maximum(counts[t:stop], remaining - (rows - t))
        t, remaining = stop, int(counts[stop - 1]) - 1
    return z


def _rolling_z(s: np.ndarray, base: np.ndarray, window: int, floor: float, minimum: int, lo: int, hi: int) -> np.ndarray:
    """Scores of rows ``[lo, hi)`` of ``s`` against the observed ``base`` values among the ``window`` rows before each."""
    a = max(0, lo - window)
    rolling = pd.Series(base[a:hi]).rolling(window, min_periods=minimum)
    mean = rolling.mean().shift(1).to_numpy()
    std = np.maximum(rolling.std(ddof=0).shift(1).to_numpy(), floor)
    with np.errstate(invalid="ignore"):
        return np.clip((s[a:hi] - mean) / std, 0.0, None)[lo - a :]
