"""Event-level detection quality against labelled anomaly windows.

Uses the overlap rule of Orion's benchmark: an expected window that overlaps
any detected event is a true positive, a detected event overlapping no
expected window is a false positive, an expected window with no overlapping
event is a false negative. An operator cares whether an incident raised an
alert and whether an alert meant an incident, not about individual points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import pandas as pd

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


def intervals(events: pd.DataFrame, start: str = "start", end: str = "end") -> list[Interval]:
    """``(start, end)`` pairs from an events or incidents frame."""
    return [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in zip(events[start], events[end])]
