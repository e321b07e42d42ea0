"""From a model's reconstruction to per-point anomaly scores: the one scoring path.

:class:`Scorer` turns a :class:`~anomaly.core.reconstruction.Reconstruction`
into scores: each point's error in scaled units per metric, the metrics
combined into one score, smoothed, and measured against its recent baseline
(:func:`standardise`). A *carry* lets the next score of the same model
continue the smoothing and the baseline where this one stopped. The
detector, the scheduled score runs, the stream benchmark and the replay tool
all score through it. Nothing here is fitted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from anomaly.core.config import ScoringConfig
from anomaly.errors import DataError

if TYPE_CHECKING:  # scoring needs the reconstruction's arrays, not the model (nor torch)
    from anomaly.core.reconstruction import Reconstruction

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

    ``deviation`` is how far each point is from what the model expected,
    in its metrics' expected ranges (the largest over the metrics; above 1
    is outside, see :func:`deviation`); None when the model keeps no ranges.
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
    deviation: pd.Series | None = None

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


#: The exponent each named error kind applies to |d|; ``power`` takes it from its argument.
ERROR_EXPONENTS = {"abs": 1.0, "squared": 2.0}


def point_errors(scaled: np.ndarray, reconstruction: np.ndarray, kind: str = "abs", power: float = 1.0) -> np.ndarray:
    """Point-wise reconstruction error per metric, in scaled units: |d| raised to the kind's exponent.

    ``kind`` is ``abs`` (|d|), ``squared`` (d²) or ``power`` (|d| ** ``power``).
    """
    diff = np.abs(np.asarray(scaled, dtype=np.float64) - reconstruction)
    exponent = ERROR_EXPONENTS.get(kind, power)
    return diff if exponent == 1.0 else diff**exponent


def expected_ranges(residuals: np.ndarray, unobserved: np.ndarray, quantile: float) -> np.ndarray:
    """Each metric's expected range in scaled units: the ``quantile`` of its absolute observed residuals (NaN: none observed)."""
    errors = np.where(unobserved, np.nan, np.abs(np.asarray(residuals, dtype=np.float64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric never observed has no range
        return np.nanquantile(errors, quantile, axis=0)


def deviation(residuals: np.ndarray, unobserved: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Each point's largest absolute residual over the metrics, in expected ranges: above 1 is outside.

    A point exactly on its reconstruction is inside even where the range is
    0 (a metric that never moved in training); NaN where no metric with a
    range was observed.
    """
    errors = np.where(unobserved, np.nan, np.abs(np.asarray(residuals, dtype=np.float64)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(errors == 0.0, 0.0, errors / ranges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN, quietly
        return np.nanmax(ratio, axis=1)


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


@dataclass(frozen=True)
class ScoreFrame:
    """Scores before thresholds, one row per point of a :class:`Reconstruction`.

    NaN where a point is missing, before the baseline has enough history, or
    already covered by the carry a score continued from.
    """

    index: pd.DatetimeIndex
    metrics: tuple[str, ...]
    metric_scores: np.ndarray  # (n, m)
    score: np.ndarray  # (n,) the combined score
    unobserved: np.ndarray  # (n, m) missing or filled: never flagged


class Scorer:
    """Reconstruction errors become scores: error, combine, smooth, then the baseline (one policy's scoring)."""

    def __init__(self, scoring: ScoringConfig) -> None:
        self.scoring = scoring

    def carry_columns(self, metrics: Sequence[str]) -> list[str]:
        """The columns of a carry: the metrics, the combined score, and with the baseline's exclusion
        the same again prefixed with :data:`HELD` (how many points from each on stay out of it)."""
        columns = [*metrics, COMBINED]
        if self.scoring.baseline and self.scoring.baseline_exclude is not None:
            columns += [HELD + c for c in columns]
        return columns

    def score(
        self, recon: Reconstruction, carry: pd.DataFrame | None = None, *, unsettled: int = 0
    ) -> tuple[ScoreFrame, pd.DataFrame | None]:
        """Scores of every point after the carry, and the carry the next score continues from.

        ``carry`` (from this scorer's previous score of the same model) must
        end before the last point of ``recon``; the points it covers keep NaN
        scores. The next carry holds the smoothed errors before the baseline
        (and the exclusion counts) of up to the baseline's length of settled
        points: all but the last ``unsettled`` (one window: their
        reconstruction can still change once later points exist).
        """
        scoring, columns = self.scoring, self.carry_columns(recon.metrics)
        if carry is not None and list(carry.columns) != columns:
            raise DataError(f"a carry needs the columns {columns}, got {list(carry.columns)}")
        errors = point_errors(recon.scaled, recon.reconstructed, scoring.error, scoring.error_power)
        errors[recon.missing] = np.nan
        errors = np.column_stack([errors, combine(errors, scoring.combine)])
        keep = max(scoring.baseline, 1)
        past, fresh = _carried(carry, recon.index, recon.freq, keep, columns)
        width = errors.shape[1]
        before, held = past.iloc[:, :width].to_numpy(), past.iloc[:, width:].fillna(0).to_numpy(dtype=np.int64)
        smoothed = smooth(errors[fresh:], scoring.span_points(recon.freq), start=last_observed(before))
        series, counts = np.vstack([before, smoothed]), None
        if scoring.baseline:
            series, counts = against_baseline(series, scoring, recon.freq, held if held.shape[1] else None)
        scores = np.full_like(errors, np.nan)
        scores[fresh:] = series[len(past) :]
        settled = max(len(recon.index) - unsettled - fresh, 0)
        new_rows = smoothed[:settled]
        if counts is not None and past.shape[1] > width:  # how long each settled point keeps later ones out of the baseline
            new_rows = np.column_stack([new_rows, counts[len(past) : len(past) + settled]])
        carried = pd.concat([past, pd.DataFrame(new_rows, recon.index[fresh : fresh + settled], past.columns)])
        next_carry = carried.iloc[-keep:] if len(carried) else None
        frame = ScoreFrame(recon.index, recon.metrics, scores[:, :-1], scores[:, -1], recon.unobserved)
        return frame, next_carry


def keep_out_of_baseline(carry: pd.DataFrame, spans: Sequence[tuple[pd.Timestamp, pd.Timestamp, Sequence[str]]]) -> pd.DataFrame:
    """A copy of ``carry`` whose rows in each span ``(start, end, metrics)`` stay out of later baselines.

    For those metrics and the combined score: their :data:`HELD` count is
    raised to at least 1 (out, without holding later points out), or, in a
    carry without exclusion counts, their smoothed error is dropped. Applying
    it again changes nothing.
    """
    out = carry.copy()
    for start, end, metrics in spans:
        inside = (out.index >= start) & (out.index <= end)
        if not inside.any():
            continue
        for column in [m for m in metrics if m in out.columns] + [COMBINED]:
            if HELD + column in out.columns:
                out.loc[inside, HELD + column] = np.maximum(out.loc[inside, HELD + column].fillna(0), 1)
            else:
                out.loc[inside, column] = np.nan
    return out


def _carried(
    carry: pd.DataFrame | None, index: pd.DatetimeIndex, freq: pd.Timedelta, keep: int, columns: list[str]
) -> tuple[pd.DataFrame, int]:
    """The ``keep`` grid points of carry before the first point it does not cover, and that point's row.

    Slots the carry has no value for (a gap before the data) are NaN, as a
    missing point would be in one continuous series.
    """
    if carry is None:
        return pd.DataFrame(np.empty((0, len(columns))), pd.DatetimeIndex([], tz=index.tz), columns), 0
    fresh = int(index.searchsorted(carry.index[-1], side="right"))
    if fresh >= len(index):
        raise DataError(f"the carry reaches {carry.index[-1]}, the end of the data to score: nothing is left to score")
    grid = pd.date_range(end=index[fresh] - freq, periods=keep, freq=freq, name=index.name)
    return carry.reindex(grid), fresh
