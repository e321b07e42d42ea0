"""Flagged points become anomaly events.

An operator wants one alert per incident, not one per point. Runs of flagged
points are padded, nearby runs merged, short ones dropped and weak ones pruned
(Hundman et al.'s rule), then each run is described: which metrics, when, how
far above the threshold, and a severity. A run is an event only once the
metric itself has left its expected range (``events.band``) during it or
within the smoothing's span before it: a score measured against a calm
baseline can cross its threshold while every value is where the model
expected it. The helpers work on plain arrays so they are tested on
hand-written cases.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly.core.config import EventConfig
from anomaly.core.data import epoch_nanoseconds
from anomaly.core.scoring import Scores

EVENT_COLUMNS: tuple[str, ...] = (
    "start",
    "end",
    "metric",
    "peak_score",
    "threshold",
    "severity",
    "peak_time",
    "n_points",
    "n_above",
    "model",
    "version",
)

Run = tuple[int, int]  # [start, stop) positions

SEVERITY_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
# (peak score / threshold) at or above which a level starts; read with SEVERITY_LEVELS.
SEVERITY_RATIOS: tuple[float, ...] = (1.0, 1.5, 2.0, 4.0)


def flag_runs(flags: np.ndarray) -> list[Run]:
    """Contiguous runs of True as ``[start, stop)`` pairs."""
    f = np.asarray(flags, dtype=bool)
    edges = np.diff(np.concatenate(([0], f.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def pad_runs(runs: Sequence[Run], padding: int, n: int) -> list[Run]:
    """Widen each run by ``padding`` points on both sides, within ``[0, n)``."""
    return [(max(0, a - padding), min(n, b + padding)) for a, b in runs]


def merge_runs(runs: Sequence[Run], gap: int) -> list[Run]:
    """Merge runs that overlap or are separated by at most ``gap`` points."""
    merged: list[Run] = []
    for a, b in sorted(runs):
        if merged and a - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def prune_runs(runs: Sequence[Run], peaks: Sequence[float], threshold: float, min_drop: float) -> list[Run]:
    """Keep the runs whose peak stands out (Hundman et al., KDD 2018, §3.2).

    Peaks are sorted descending with the threshold appended; walking down,
    the relative drop ``1 - next / current`` is computed; every run up to the
    last drop larger than ``min_drop`` is kept, the rest are reclassified as
    nominal. ``min_drop = 0`` keeps everything.
    """
    if min_drop <= 0 or not runs:
        return list(runs)
    order = np.argsort(-np.asarray(peaks, dtype=np.float64), kind="stable")
    ladder = np.append(np.asarray(peaks, dtype=np.float64)[order], threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = np.where(ladder[:-1] > 0, 1.0 - ladder[1:] / ladder[:-1], 0.0)
    significant = np.flatnonzero(drops > min_drop)
    keep = set(order[: significant[-1] + 1].tolist()) if len(significant) else set()
    return [run for i, run in enumerate(runs) if i in keep]


def severity(peak: float, threshold: float, above: int = 0, sustained: int = 0) -> str:
    """Level from how far and how long the score rose above the threshold.

    The peak's ratio to the threshold picks the level (see SEVERITY_RATIOS);
    ``above`` points over the threshold, when at least ``sustained`` (> 0),
    raise it one level, up to critical.
    """
    ratio = peak / threshold if threshold > 0 else float("inf")
    level = max(int(np.searchsorted(SEVERITY_RATIOS, ratio, side="right")) - 1, 0)
    if sustained > 0 and above >= sustained:
        level += 1
    return SEVERITY_LEVELS[min(level, len(SEVERITY_LEVELS) - 1)]


def outside_points(deviation: pd.Series | np.ndarray | None) -> np.ndarray | None:
    """Where the metric is outside its expected range (deviation above 1); None without ranges."""
    if deviation is None:
        return None
    return np.nan_to_num(np.asarray(deviation, dtype=np.float64), nan=0.0) > 1.0


def left_range(runs: Sequence[Run], outside: np.ndarray, lookback: int) -> list[Run]:
    """The runs in which, or up to ``lookback`` points before which, the metric was outside its range."""
    seen = np.concatenate(([0], np.cumsum(outside, dtype=np.int64)))
    return [(a, b) for a, b in runs if seen[b] > seen[max(0, a - lookback)]]


def find_runs(
    flags: np.ndarray,
    score: np.ndarray,
    threshold: float,
    config: EventConfig,
    outside: np.ndarray | None = None,
    lookback: int = 0,
) -> list[Run]:
    """Flag runs after padding, merging, minimum length, the range gate and pruning, in time order.

    ``outside`` (see :func:`outside_points`) keeps only the runs where the
    metric left its range (:func:`left_range`); None keeps them all.
    """
    runs = merge_runs(pad_runs(flag_runs(flags), config.padding, len(flags)), config.merge_gap)
    runs = [(a, b) for a, b in runs if b - a >= config.min_length]
    if outside is not None:
        runs = left_range(runs, outside, lookback)
    peaks = [float(np.nanmax(score[a:b])) for a, b in runs]
    return prune_runs(runs, peaks, threshold, config.prune)


def find_events(
    scores: Scores, config: EventConfig, model: str = "", version: str = "", lookback: pd.Timedelta = pd.Timedelta(0)
) -> pd.DataFrame:
    """One row per event (columns :data:`EVENT_COLUMNS`), most recent last; ``lookback``: see :meth:`Policy.lookback`."""
    score = scores.score.to_numpy(dtype=np.float64)
    points = int(lookback / _step(scores.score.index))
    runs = find_runs(scores.flags.to_numpy(dtype=bool), score, scores.threshold, config, outside_points(scores.deviation), points)
    rows = [_describe(scores, a, b, model, version, config.sustained) for a, b in runs]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The grid's interval (any positive one for a single point: there is nothing to look back over)."""
    return index[1] - index[0] if len(index) >= 2 else pd.Timedelta(1, "s")


def _describe(scores: Scores, a: int, b: int, model: str, version: str, sustained: int) -> dict[str, object]:
    span = scores.score.iloc[a:b]
    peak_at = int(np.nanargmax(span.to_numpy()))
    peak = float(span.iloc[peak_at])
    above = int(scores.flags.iloc[a:b].sum())
    return {
        "start": scores.score.index[a],
        "end": scores.score.index[b - 1],
        "metric": ",".join(contributing_metrics(scores, a, b)),
        "peak_score": peak,
        "peak_time": span.index[peak_at],
        "threshold": scores.threshold,
        "severity": severity(peak, scores.threshold, above, sustained),
        "n_points": b - a,
        "n_above": above,
        "model": model,
        "version": version,
    }


def contributing_metrics(scores: Scores, a: int, b: int) -> list[str]:
    """Metrics behind an event, strongest first.

    Those whose own score crossed their own threshold inside the span; if
    none did on its own, the one that came closest. A metric with no data in
    the span is never named.
    """
    ratios: dict[str, float] = {}
    for m in scores.metrics:
        span = scores.metric_scores[m].iloc[a:b].to_numpy(dtype=np.float64)
        if not np.isnan(span).all():
            ratios[m] = float(np.nanmax(span)) / max(scores.thresholds[m], 1e-12)
    crossed = [m for m in ratios if bool(scores.metric_flags[m].iloc[a:b].any())]
    chosen = crossed or ([max(ratios, key=ratios.__getitem__)] if ratios else [])
    return sorted(chosen, key=lambda m: -ratios[m])


# -- alerts: flagged points followed causally across score runs ---------------------------------------

#: An alert row: the *events* contract plus the alert's identity, when it fired and whether it is over.
ALERT_COLUMNS: tuple[str, ...] = ("id", *EVENT_COLUMNS, "onset", "closed")


def alert_id(model: str, start: pd.Timestamp) -> str:
    """Stable id of an alert: the same model and start give the same id in every run and on every machine."""
    digest = hashlib.sha256(f"{model}\0{pd.Timestamp(start).isoformat()}".encode()).hexdigest()
    return digest[:16]


@dataclass(frozen=True)
class OpenRun:
    """A run of flagged points that a later flag may still continue."""

    start: pd.Timestamp  # its first flagged point
    last: pd.Timestamp  # its last flagged point so far
    flagged: int  # its flagged points so far
    onset: pd.Timestamp | None  # when it became an alert: its ``min_length``-th flagged point, or the first after the metric left its range
    peak_score: float
    peak_time: pd.Timestamp
    threshold: float  # the threshold its peak was measured against
    metrics: tuple[str, ...] = ()  # those behind it so far, strongest first

    @property
    def peak_ratio(self) -> float:
        return _ratio(self.peak_score, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "last": self.last.isoformat(),
            "flagged": self.flagged,
            "onset": None if self.onset is None else self.onset.isoformat(),
            "peak_score": self.peak_score,
            "peak_time": self.peak_time.isoformat(),
            "threshold": self.threshold,
            "metrics": list(self.metrics),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OpenRun":
        onset = data["onset"]
        return cls(
            pd.Timestamp(data["start"]),
            pd.Timestamp(data["last"]),
            int(data["flagged"]),
            None if onset is None else pd.Timestamp(onset),
            float(data["peak_score"]),
            pd.Timestamp(data["peak_time"]),
            float(data["threshold"]),
            tuple(str(m) for m in data.get("metrics", [])),
        )


#: Earlier than any point: "the metric has not left its range yet".
NEVER = np.iinfo(np.int64).min


@dataclass(frozen=True)
class TrackerState:
    """What the tracker carries from one chunk to the next: the open run, and when the metric last left its range."""

    run: OpenRun | None = None
    last_outside: pd.Timestamp | None = None


class AlertTracker:
    """Flags, chunk by chunk, become alerts: the one route from flags to alerts.

    Flagged runs at most ``merge_gap`` quiet points apart are one alert; an
    alert fires on its ``min_length``-th flagged point, or on the first
    flagged point after that once the metric has left its expected range in
    the run or up to ``lookback`` before it (the onset), when the scores
    carry deviations; a run in which the metric never left its range never
    fires. It is over once ``merge_gap + 1`` points have passed since its
    last flagged point with no new one. Only what came before a point decides
    anything about it, so feeding a series in any chunks gives the same
    alerts as feeding it whole: the scheduled score runs and the stream
    benchmark both advance it, with its state carried between calls.
    """

    def __init__(
        self, config: EventConfig, step: pd.Timedelta, model: str = "", version: str = "", lookback: pd.Timedelta = pd.Timedelta(0)
    ) -> None:
        self.config, self.step, self.model, self.version, self.lookback = config, step, model, version, lookback

    @property
    def reach(self) -> pd.Timedelta:
        """How far after its last flagged point a flag still continues a run."""
        return (self.config.merge_gap + 1) * self.step

    def advance(self, scores: Scores, state: TrackerState | None = None) -> tuple[pd.DataFrame, TrackerState]:
        """The alert rows this chunk touched (:data:`ALERT_COLUMNS`) and the state left after it."""
        state = state or TrackerState()
        rows: dict[str, dict[str, Any]] = {}  # by alert id: its latest row
        flags = scores.flags.to_numpy(dtype=bool)
        index = scores.score.index
        left = self._last_outside(scores, state.last_outside)
        run = state.run
        for a, b in flag_runs(flags):
            if run is not None and index[a] - run.last <= self.reach:
                run = self._extend(run, scores, a, b, left)
            else:
                self._note(rows, run, closed=True)
                run = self._extend(None, scores, a, b, left)
            self._note(rows, run, closed=False)
        if run is not None and len(index) and index[-1] - run.last >= self.reach:
            self._note(rows, run, closed=True)
            run = None
        last_outside = state.last_outside
        if left is not None and len(left) and left[-1] != NEVER:
            last_outside = pd.Timestamp(int(left[-1]), unit="ns", tz=index.tz)
        return pd.DataFrame(list(rows.values()), columns=list(ALERT_COLUMNS)), TrackerState(run, last_outside)

    @staticmethod
    def _last_outside(scores: Scores, before: pd.Timestamp | None) -> np.ndarray | None:
        """For each point, when (epoch ns) the metric was last outside its range, up to it; None without ranges."""
        outside = outside_points(scores.deviation)
        if outside is None:
            return None
        stamps = np.where(outside, epoch_nanoseconds(scores.score.index), NEVER)
        start = NEVER if before is None else int(epoch_nanoseconds(pd.DatetimeIndex([before]))[0])
        return np.maximum.accumulate(np.concatenate(([start], stamps)))[1:]

    def _fires(self, left: np.ndarray | None, lo: int, hi: int, start: pd.Timestamp) -> int | None:
        """The first position in ``[lo, hi)`` at which the metric has left its range since ``lookback`` before ``start``."""
        if lo >= hi:
            return None
        if left is None:
            return lo
        since = int(epoch_nanoseconds(pd.DatetimeIndex([start - self.lookback]))[0])
        armed = np.flatnonzero(left[lo:hi] >= since)
        return lo + int(armed[0]) if armed.size else None

    def _note(self, rows: dict[str, dict[str, Any]], run: OpenRun | None, *, closed: bool) -> None:
        """Record ``run``'s row, replacing an earlier one of the same alert; a run that never fired has none."""
        if run is not None and run.onset is not None:
            row = self._row(run, closed=closed)
            rows[row["id"]] = row

    def _extend(self, run: OpenRun | None, scores: Scores, a: int, b: int, left: np.ndarray | None) -> OpenRun:
        """``run`` (or a new one) continued by the flagged run ``[a, b)`` of this chunk."""
        index = scores.score.index
        score = scores.score.to_numpy(dtype=np.float64)
        peak_at = a + int(np.nanargmax(score[a:b]))
        before = 0 if run is None else run.flagged
        onset = None if run is None else run.onset
        if onset is None:
            fired = self._fires(left, a + max(0, self.config.min_length - before - 1), b, index[a] if run is None else run.start)
            onset = None if fired is None else index[fired]
        metrics = tuple(contributing_metrics(scores, a, b))
        if run is None:
            return OpenRun(index[a], index[b - 1], b - a, onset, float(score[peak_at]), index[peak_at], scores.threshold, metrics)
        higher = _ratio(score[peak_at], scores.threshold) > run.peak_ratio
        return OpenRun(
            run.start,
            index[b - 1],
            before + (b - a),
            onset,
            float(score[peak_at]) if higher else run.peak_score,
            index[peak_at] if higher else run.peak_time,
            scores.threshold if higher else run.threshold,
            run.metrics + tuple(m for m in metrics if m not in run.metrics),
        )

    def _row(self, run: OpenRun, *, closed: bool) -> dict[str, Any]:
        return {
            "id": alert_id(self.model, run.start),
            "start": run.start,
            "end": run.last,
            "metric": ",".join(run.metrics),
            "peak_score": run.peak_score,
            "threshold": run.threshold,
            "severity": severity(run.peak_ratio, 1.0, run.flagged, self.config.sustained),
            "peak_time": run.peak_time,
            "n_points": int((run.last - run.start) / self.step) + 1,
            "n_above": run.flagged,
            "model": self.model,
            "version": self.version,
            "onset": run.onset,
            "closed": closed,
        }


def _ratio(peak: float, threshold: float) -> float:
    return float(peak) / float(threshold) if threshold > 0 else float("inf")
