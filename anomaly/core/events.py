"""Flagged points become alerts and events: one causal tracker, used everywhere.

An operator wants one alert per incident, not one per point, an alert only
when the metric itself left its expected range, and an alert whose extent is
the metric's excursion, not a smoothed score's decay. :class:`AlertTracker`
follows a series point by point: a flagged point opens a run; the run
becomes an alert once the metric has also left its expected range (the
reconstruction ± the model's normal error, ``events.band``); the alert lasts
while the metric keeps leaving it (two points in a row, or one far out) or
the score stays flagged, ends at the metric's last such point, and is over
once metric and score have been quiet for ``events.merge_gap``. Severity
says how far (in expected ranges) and how long the metric left it. The
scheduled score runs, the stream benchmark and batch events all use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly.core.config import EventConfig
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
    "deviation",
)
#: An alert row: the *events* contract plus the alert's identity, when it fired and whether it is over.
ALERT_COLUMNS: tuple[str, ...] = ("id", *EVENT_COLUMNS, "onset", "closed")

Run = tuple[int, int]  # [start, stop) positions

SEVERITY_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
#: How far the metric left its expected range (in ranges) at which a level starts; read with SEVERITY_LEVELS.
SEVERITY_DEVIATIONS: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)
#: For a model saved before expected ranges were kept: the peak score over its threshold at which a level starts.
SEVERITY_RATIOS: tuple[float, ...] = (1.0, 1.5, 2.0, 4.0)


def flag_runs(flags: np.ndarray) -> list[Run]:
    """Contiguous runs of True as ``[start, stop)`` pairs."""
    f = np.asarray(flags, dtype=bool)
    edges = np.diff(np.concatenate(([0], f.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def prune_runs(runs: Sequence[Any], peaks: Sequence[float], threshold: float, min_drop: float) -> list[Any]:
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


def severity(deviation: float, ratio: float, sustained: bool) -> str:
    """Level from how far the metric left its expected range (``deviation``, in ranges), one more when ``sustained``.

    Without a deviation (NaN: a model saved before ranges were kept) the
    peak score's ``ratio`` to its threshold picks the level instead.
    """
    if np.isfinite(deviation):
        level = int(np.searchsorted(SEVERITY_DEVIATIONS, deviation, side="right")) - 1
    else:
        level = int(np.searchsorted(SEVERITY_RATIOS, ratio, side="right")) - 1
    return SEVERITY_LEVELS[min(max(level, 0) + int(sustained), len(SEVERITY_LEVELS) - 1)]


def find_events(scores: Scores, config: EventConfig, model: str = "", version: str = "") -> pd.DataFrame:
    """The alerts of a whole series as events (columns :data:`EVENT_COLUMNS`), padded and pruned, most recent last.

    The same tracker as the score runs cuts them; batch analysis then adds
    ``events.padding`` around each and drops weak ones (``events.prune``).
    """
    index = scores.score.index
    alerts, _ = AlertTracker(config, _step(index), model=model, version=version).advance(scores)
    if alerts.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS))
    pad = pd.Timedelta(config.padding)
    events = alerts.assign(start=(alerts["start"] - pad).clip(lower=index[0]), end=(alerts["end"] + pad).clip(upper=index[-1]))
    keep = prune_runs(list(range(len(events))), events["peak_score"].tolist(), scores.threshold, config.prune)
    return _merge_overlaps(events.iloc[keep][list(EVENT_COLUMNS)].reset_index(drop=True), _step(index))


def _merge_overlaps(events: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Events that padding made overlap or touch become one: the span of both, the higher peak, the counts added."""
    rows: list[dict[str, Any]] = []
    for row in events.to_dict("records"):
        if not rows or row["start"] > rows[-1]["end"] + step:
            rows.append(row)
            continue
        last = rows[-1]
        if _ratio(row["peak_score"], row["threshold"]) > _ratio(last["peak_score"], last["threshold"]):
            last.update(peak_score=row["peak_score"], peak_time=row["peak_time"], threshold=row["threshold"])
        metrics = [m for m in [*str(last["metric"]).split(","), *str(row["metric"]).split(",")] if m]
        last.update(
            end=max(last["end"], row["end"]),
            metric=",".join(dict.fromkeys(metrics)),
            n_above=last["n_above"] + row["n_above"],
            severity=max(last["severity"], row["severity"], key=SEVERITY_LEVELS.index),
            deviation=np.fmax(last["deviation"], row["deviation"]),
        )
        last["n_points"] = int((last["end"] - last["start"]) / step) + 1
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def contributing_metrics(scores: Scores, a: int, b: int) -> list[str]:
    """Metrics behind points ``[a, b)``, strongest first.

    Those whose own score crossed their own threshold there; if none did on
    its own, the one that came closest. A metric with no data there is
    never named.
    """
    ratios: dict[str, float] = {}
    for m in scores.metrics:
        span = scores.metric_scores[m].iloc[a:b].to_numpy(dtype=np.float64)
        if not np.isnan(span).all():
            ratios[m] = float(np.nanmax(span)) / max(scores.thresholds[m], 1e-12)
    crossed = [m for m in ratios if bool(scores.metric_flags[m].iloc[a:b].any())]
    chosen = crossed or ([max(ratios, key=ratios.__getitem__)] if ratios else [])
    return sorted(chosen, key=lambda m: -ratios[m])


def alert_id(model: str, start: pd.Timestamp) -> str:
    """Stable id of an alert: the same model and start give the same id in every run and on every machine."""
    digest = hashlib.sha256(f"{model}\0{pd.Timestamp(start).isoformat()}".encode()).hexdigest()
    return digest[:16]


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    return index[1] - index[0] if len(index) >= 2 else pd.Timedelta("5min")


@dataclass(frozen=True)
class OpenRun:
    """An alert (or a run not yet long enough to be one) that later points may still continue."""

    start: pd.Timestamp  # its first flagged point
    last: pd.Timestamp  # its last point of excursion (or flagged, without ranges), or the point it fired on
    flagged: int  # its flagged points so far
    outside: int  # its points of excursion outside the expected range so far
    onset: pd.Timestamp | None  # when it became an alert
    peak_score: float
    peak_time: pd.Timestamp
    threshold: float  # the threshold its peak was measured against
    peak_deviation: float | None  # the furthest the metric went, in expected ranges (None without ranges)
    metrics: tuple[str, ...] = ()  # those behind it so far, strongest first

    @property
    def peak_ratio(self) -> float:
        return _ratio(self.peak_score, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "last": self.last.isoformat(),
            "flagged": self.flagged,
            "outside": self.outside,
            "onset": None if self.onset is None else self.onset.isoformat(),
            "peak_score": self.peak_score,
            "peak_time": self.peak_time.isoformat(),
            "threshold": self.threshold,
            "peak_deviation": self.peak_deviation,
            "metrics": list(self.metrics),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "OpenRun":
        onset, deviation = data["onset"], data.get("peak_deviation")
        return cls(
            pd.Timestamp(data["start"]),
            pd.Timestamp(data["last"]),
            int(data["flagged"]),
            int(data.get("outside", 0)),
            None if onset is None else pd.Timestamp(onset),
            float(data["peak_score"]),
            pd.Timestamp(data["peak_time"]),
            float(data["threshold"]),
            None if deviation is None else float(deviation),
            tuple(str(m) for m in data.get("metrics", [])),
        )


@dataclass(frozen=True)
class TrackerState:
    """What the tracker carries between chunks: the open run, the last flagged point, whether the last point was outside."""

    run: OpenRun | None = None
    last_flag: pd.Timestamp | None = None
    was_outside: bool = False

    def to_json(self) -> dict[str, Any]:
        last = None if self.last_flag is None else self.last_flag.isoformat()
        return {"run": None if self.run is None else self.run.to_json(), "last_flag": last, "was_outside": self.was_outside}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "TrackerState":
        if not data:
            return cls()
        run, last = data.get("run"), data.get("last_flag")
        return cls(
            None if run is None else OpenRun.from_json(run),
            None if last is None else pd.Timestamp(last),
            bool(data.get("was_outside", False)),
        )


@dataclass(frozen=True)
class _Chunk:
    """One chunk's arrays, read once."""

    index: pd.DatetimeIndex
    flags: np.ndarray
    score: np.ndarray
    deviation: np.ndarray  # NaN where unknown
    outside: np.ndarray  # part of an excursion (see :data:`CLEAR_DEVIATION`), not a chance point just outside
    active: np.ndarray
    ratios: np.ndarray  # (n, m) each metric's score over its threshold
    crossed: np.ndarray  # (n, m) each metric's own flag
    metrics: tuple[str, ...]
    ranged: bool  # expected ranges known: an alert needs the metric outside its range
    was_outside: bool  # the chunk's last point was outside its range


#: A point outside its range is part of an excursion when the point before it was outside too, or when
#: it is this many ranges out: a single point just outside a 99.5 % range happens every few hundred
#: points by chance, and must neither fire an alert nor keep one open.
CLEAR_DEVIATION = 2.0


class AlertTracker:
    """Flags and deviations, chunk by chunk, become alerts: the one route from flags to alerts.

    A flagged point opens a run. The run fires (its onset) once it has been
    flagged for ``events.min_duration`` and the metric has been outside its
    expected range at some point of it: a score that crosses its threshold
    while every value stays where the model expected it (a calm baseline's
    tiny spread makes that happen) is not an alert. The run's end is the
    last point of the metric's excursion (outside two points in a row, or
    :data:`CLEAR_DEVIATION` ranges out, or the point it fired on); it is over
    once the metric has been back inside, and the score below its threshold,
    for ``events.merge_gap``, so neither a smoothed score's decay nor a
    chance point just outside stretches it. Without expected ranges (a
    model saved before they were kept) flags alone open, fire and hold it.
    Only what came before a point decides anything about it, so feeding a
    series in any chunks gives the same alerts as feeding it whole.
    """

    def __init__(self, config: EventConfig, step: pd.Timedelta, model: str = "", version: str = "") -> None:
        self.config, self.step, self.model, self.version = config, step, model, version
        self.reach = pd.Timedelta(config.merge_gap)
        self.needed = max(1, int(np.ceil(pd.Timedelta(config.min_duration) / step)))
        self.sustained = pd.Timedelta(config.sustained)

    def advance(self, scores: Scores, state: TrackerState | None = None) -> tuple[pd.DataFrame, TrackerState]:
        """The alert rows this chunk touched (:data:`ALERT_COLUMNS`) and the state left after it."""
        state = state or TrackerState()
        chunk = self._chunk(scores, state)
        rows: dict[str, dict[str, Any]] = {}  # by alert id: its latest row
        run, last_flag = state.run, state.last_flag
        for i, at in enumerate(chunk.index):
            if run is not None and self._over(run, chunk, i, last_flag):
                self._note(rows, run, closed=True)
                run = None
            if run is None and chunk.flags[i]:
                run = self._open(chunk, i, scores.threshold)
            elif run is not None:
                run = self._step(run, chunk, i, scores.threshold)
            if run is not None:
                self._note(rows, run, closed=False)
            if chunk.flags[i]:
                last_flag = at
        return pd.DataFrame(list(rows.values()), columns=list(ALERT_COLUMNS)), TrackerState(run, last_flag, chunk.was_outside)

    def _over(self, run: OpenRun, chunk: _Chunk, i: int, last_flag: pd.Timestamp | None) -> bool:
        """Whether ``run`` is over at point ``i``: the metric back in range, and the score under its threshold, for the gap."""
        at = chunk.index[i]
        if chunk.active[i] or chunk.flags[i] or at - run.last < self.reach:
            return False
        return last_flag is None or at - last_flag >= self.reach

    def _chunk(self, scores: Scores, state: TrackerState) -> _Chunk:
        index = scores.score.index
        flags = scores.flags.to_numpy(dtype=bool)
        deviation = np.full(len(index), np.nan) if scores.deviation is None else scores.deviation.to_numpy(dtype=np.float64)
        ranged = bool(np.isfinite(deviation).any()) or (state.run is not None and state.run.peak_deviation is not None)
        known = np.nan_to_num(deviation, nan=0.0)
        beyond = known > 1.0
        before = np.concatenate(([state.was_outside], beyond[:-1]))
        outside = (known >= CLEAR_DEVIATION) | (beyond & before)
        thresholds = np.array([max(scores.thresholds[m], 1e-12) for m in scores.metrics])
        ratios = scores.metric_scores.to_numpy(dtype=np.float64) / thresholds
        crossed = scores.metric_flags.to_numpy(dtype=bool)
        score = scores.score.to_numpy(dtype=np.float64)
        was_outside = bool(beyond[-1]) if len(beyond) else state.was_outside
        active = outside if ranged else flags
        return _Chunk(index, flags, score, deviation, outside, active, ratios, crossed, tuple(scores.metrics), ranged, was_outside)

    def _open(self, chunk: _Chunk, i: int, threshold: float) -> OpenRun:
        at = chunk.index[i]
        deviation = float(chunk.deviation[i]) if np.isfinite(chunk.deviation[i]) else None
        onset = at if self._fires(chunk, 1, deviation) else None
        return OpenRun(at, at, 1, int(chunk.outside[i]), onset, float(chunk.score[i]), at, threshold, deviation, _behind(chunk, i))

    def _fires(self, chunk: _Chunk, flagged: int, peak_deviation: float | None) -> bool:
        """Whether a run flagged ``flagged`` times whose metric went ``peak_deviation`` ranges out is an alert yet."""
        left = peak_deviation is not None and peak_deviation > 1.0
        return flagged >= self.needed and (left or not chunk.ranged)

    def _step(self, run: OpenRun, chunk: _Chunk, i: int, threshold: float) -> OpenRun:
        """``run`` after point ``i``: counts, peak, onset and, when active, its last point."""
        at, changes = chunk.index[i], {}
        flagged, outside = run.flagged + int(chunk.flags[i]), run.outside + int(chunk.outside[i])
        deviation = chunk.deviation[i]
        if np.isfinite(deviation) and (run.peak_deviation is None or deviation > run.peak_deviation):
            changes["peak_deviation"] = float(deviation)
        if run.onset is None and self._fires(chunk, flagged, changes.get("peak_deviation", run.peak_deviation)):
            changes["onset"] = at
        if chunk.flags[i]:
            changes["flagged"] = flagged
            behind = _behind(chunk, i)
            if _ratio(chunk.score[i], threshold) > run.peak_ratio:  # the metrics behind the peak lead the list
                changes.update(peak_score=float(chunk.score[i]), peak_time=at, threshold=threshold)
                changes["metrics"] = behind + tuple(m for m in run.metrics if m not in behind)
            elif more := tuple(m for m in behind if m not in run.metrics):
                changes["metrics"] = run.metrics + more
        if chunk.active[i] or "onset" in changes:  # the point it fired on is part of it, however far out
            changes["last"] = at
        if chunk.outside[i]:
            changes["outside"] = outside
        return replace(run, **changes) if changes else run

    def _note(self, rows: dict[str, dict[str, Any]], run: OpenRun, *, closed: bool) -> None:
        """Record ``run``'s row, replacing an earlier one of the same alert; a run that never fired has none."""
        if run.onset is not None:
            row = self._row(run, closed=closed)
            rows[row["id"]] = row

    def _row(self, run: OpenRun, *, closed: bool) -> dict[str, Any]:
        long = run.flagged if run.peak_deviation is None else run.outside  # without ranges: time above the threshold
        sustained = self.sustained > pd.Timedelta(0) and long * self.step >= self.sustained
        return {
            "id": alert_id(self.model, run.start),
            "start": run.start,
            "end": run.last,
            "metric": ",".join(run.metrics),
            "peak_score": run.peak_score,
            "threshold": run.threshold,
            "severity": severity(np.nan if run.peak_deviation is None else run.peak_deviation, run.peak_ratio, sustained),
            "peak_time": run.peak_time,
            "n_points": int((run.last - run.start) / self.step) + 1,
            "n_above": run.flagged,
            "model": self.model,
            "version": self.version,
            "deviation": np.nan if run.peak_deviation is None else run.peak_deviation,
            "onset": run.onset,
            "closed": closed,
        }


def _behind(chunk: _Chunk, i: int) -> tuple[str, ...]:
    """Metrics behind point ``i``: those over their own thresholds, strongest first, else the closest one."""
    ratios = chunk.ratios[i]
    crossed = np.flatnonzero(chunk.crossed[i])
    if len(crossed):
        return tuple(chunk.metrics[j] for j in crossed[np.argsort(-ratios[crossed], kind="stable")])
    if np.isnan(ratios).all():
        return ()
    return (chunk.metrics[int(np.nanargmax(ratios))],)


def _ratio(peak: float, threshold: float) -> float:
    return float(peak) / float(threshold) if threshold > 0 else float("inf")
