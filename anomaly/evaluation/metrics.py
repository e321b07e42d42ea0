"""Event-level detection quality against labelled anomaly windows.

Uses the overlap rule of Orion's benchmark: an expected window that overlaps
any detected event is a true positive, a detected event overlapping no
expected window is a false positive, an expected window with no overlapping
event is a false negative. An operator cares whether an incident raised an
alert and whether an alert meant an incident, not about individual points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from anomaly.errors import DataError

Interval = tuple[pd.Timestamp, pd.Timestamp]  # inclusive


@dataclass(frozen=True)
class EventScores:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: "EventScores") -> "EventScores":
        return EventScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def overlaps(a: Interval, b: Interval) -> bool:
    """Inclusive intervals share at least one instant."""
    return a[0] <= b[1] and b[0] <= a[1]


def score_events(expected: Sequence[Interval], detected: Sequence[Interval]) -> EventScores:
    """tp/fp/fn of ``detected`` intervals against ``expected`` ones (Orion's overlap rule)."""
    tp = sum(any(overlaps(e, d) for d in detected) for e in expected)
    fp = sum(not any(overlaps(d, e) for e in expected) for d in detected)
    return EventScores(tp=tp, fp=fp, fn=len(expected) - tp)


def score_events_per_metric(incidents: pd.DataFrame, events: pd.DataFrame) -> EventScores:
    """tp/fp/fn matched per metric: an event is true only where it overlaps an incident on a metric it names.

    ``incidents`` has ``metric``, ``start``, ``end``; ``events`` the events
    contract (``metric`` lists the metrics behind it, comma-separated). An
    incident is caught when an overlapping event names its metric; an event
    that names none of the metrics of the incidents it overlaps is false.
    """
    caught, true = matched_per_metric(incidents, events)
    return EventScores(tp=sum(caught), fp=len(true) - sum(true), fn=len(caught) - sum(caught))


def matched_per_metric(incidents: pd.DataFrame, events: pd.DataFrame) -> tuple[list[bool], list[bool]]:
    """Per incident whether it was caught, and per event whether it is true, matched as :func:`score_events_per_metric`."""
    named = [set(str(m).split(",")) for m in events["metric"]]
    spans = intervals(events)
    rows = list(incidents.itertuples())
    hit = [[row.metric in names and overlaps((row.start, row.end), span) for names, span in zip(named, spans)] for row in rows]
    return [any(h) for h in hit], [any(h[j] for h in hit) for j in range(len(spans))]


def intervals(events: pd.DataFrame, start: str = "start", end: str = "end") -> list[Interval]:
    """``(start, end)`` pairs from an events or incidents frame."""
    return [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in zip(events[start], events[end])]


# -- the NAB score ----------------------------------------------------------------------------
#
# The Numenta Anomaly Benchmark's scorer (Lavin & Ahmad 2015; nab/sweeper.py), standard
# profile, for alerts that are already decided (0/1): every alerted point is a detection.
# A detection inside an anomaly window earns a scaled sigmoid of its position (1 at the
# window's first point, falling towards 0 at its end), and only the earliest one in a window
# counts; a window with none costs the FN weight; each alerted point outside every window
# costs the FP weight, less right after a window. The first 15% of a file (at most 750
# rows) is a probationary period that is not scored at all.


@dataclass(frozen=True)
class NabProfile:
    """Weights of a NAB application profile (the standard one by default)."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = NabProfile()
PROBATION_FRACTION = 0.15


@dataclass(frozen=True)
class NabScore:
    """A file's (or a sum of files') raw NAB score, with what normalising it needs."""

    raw: float
    windows: int
    tp: int
    fp: int
    fn: int
    profile: NabProfile = STANDARD

    def __add__(self, other: "NabScore") -> "NabScore":
        return NabScore(self.raw + other.raw, self.windows + other.windows, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.profile)

    @property
    def normalised(self) -> float:
        """0 for no detections, 100 for a detection at the first point of every window (NAB's scale).

        NaN without windows: with nothing to detect, NAB's scale has no range.
        """
        null, perfect = -self.profile.fn * self.windows, self.profile.tp * self.windows
        if perfect == null:
            return math.nan
        return 100.0 * (self.raw - null) / (perfect - null)


def scaled_sigmoid(position: float) -> float:
    """NAB's reward by position: -1 (window start) scores ~0.987, 0 (just past its end) 0, far past it -1."""
    return -1.0 if position > 3.0 else 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the start of a file that are not scored: 15% of it, at most 750 (NAB's 15% of 5,000)."""
    return int(min(math.floor(fraction * rows), fraction * 5000))


def nab_score(
    timestamps: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    alerts: Sequence[bool] | np.ndarray,
    windows: Sequence[Interval],
    profile: NabProfile = STANDARD,
) -> NabScore:
    """The raw NAB score of one file's alerts (see the section comment); windows are inclusive.

    A window is placed on the rows from the first timestamp at or after its
    start to the last at or before its end (NAB requires exact timestamps;
    this also takes labels between rows). Windows that begin inside the
    probationary period are not scored, as in NAB.
    """
    index = pd.DatetimeIndex(timestamps)
    flags = np.asarray(alerts, dtype=bool)
    if len(flags) != len(index):
        raise DataError(f"alerts has {len(flags)} values but there are {len(index)} timestamps")
    probation = probation_length(len(index))
    spans = _window_rows(index, windows)
    weight = _point_weights(len(index), spans, profile)
    inside = np.zeros(len(index), dtype=bool)
    for a, b in spans:
        inside[a : b + 1] = True
    scored = [(a, b) for a, b in spans if a >= probation]
    raw, tp, fn = 0.0, 0, 0
    for a, b in scored:
        hits = np.flatnonzero(flags[a : b + 1])
        if len(hits):
            raw += float(weight[a + hits[0]])
            tp += 1
        else:
            raw -= profile.fn
            fn += 1
    outside = np.flatnonzero(flags & ~inside)
    outside = outside[outside >= probation]
    raw += float(weight[outside].sum())
    return NabScore(raw, len(scored), tp, len(outside), fn, profile)


def _window_rows(index: pd.DatetimeIndex, windows: Sequence[Interval]) -> list[tuple[int, int]]:
    """Each window as inclusive row positions, in time order; windows with no row are left out."""
    rows = []
    for start, end in sorted(windows):
        a = int(index.searchsorted(pd.Timestamp(start), side="left"))
        b = int(index.searchsorted(pd.Timestamp(end), side="right")) - 1
        if a <= b:
            rows.append((a, b))
    return rows


def _point_weights(n: int, spans: Sequence[tuple[int, int]], profile: NabProfile) -> np.ndarray:
    """What a detection at each row would add: a TP reward inside a window, an FP cost outside."""
    weight = np.full(n, -profile.fp)  # before the first window: the full FP cost
    max_tp = scaled_sigmoid(-1.0)
    for k, (a, b) in enumerate(spans):
        width = b - a + 1
        for i in range(a, b + 1):
            weight[i] = scaled_sigmoid(-(b - i + 1) / width) * profile.tp / max_tp
        stop = spans[k + 1][0] if k + 1 < len(spans) else n
        past = np.arange(b + 1, stop)
        weight[b + 1 : stop] = [scaled_sigmoid(abs(b - i) / max(width - 1, 1)) * profile.fp for i in past]
    return weight
