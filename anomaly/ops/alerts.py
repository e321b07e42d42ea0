"""Alerts: anomaly events followed across score runs, so each incident is announced once.

A score run only sees its own new points, so an incident that lasts longer
than the gap between runs arrives as several events, one per run. Paging
someone for each would teach them to mute the pager. This module keeps a
ledger of *alerts*, each the union of the events of one model that follow
each other closely, and moves each alert through three states:

- **new**: the first report that sees it announces it;
- **ongoing**: later reports list it while the model keeps flagging it, or
  while no point after its end has been scored yet;
- **resolved**: once the model has scored past its end (plus the merge gap)
  without a continuation, the next report says so, once, and stops.

The ledger is plain JSON kept beside the reports (``reports/state.json``),
written atomically after each report, so it survives restarts; a report run
that crashes before writing it is simply done again.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from anomaly.errors import DataError, excerpt
from anomaly.core.events import SEVERITY_LEVELS, severity

#: Version of the ledger's layout; a ledger written by a newer version is refused, not guessed at.
#: Version 3 added ``parked`` (deliveries the webhook refused for good); version 2 is read as is.
LEDGER_VERSION = 3
#: Resolved alerts are forgotten after this long: late duplicates of older events are unlikely.
KEEP_RESOLVED = pd.Timedelta("7D")
STATES: tuple[str, ...] = ("new", "ongoing", "resolved")
_RANK = {level: rank for rank, level in enumerate(SEVERITY_LEVELS)}


@dataclass
class Alert:
    """One incident of one model, possibly made of events from several score runs.

    Times are ISO 8601 strings in UTC so the ledger is plain JSON.
    ``peak_ratio`` is the highest score over its threshold of any part, so
    parts scored by different model versions compare fairly. ``gap_s`` is
    how far after ``end`` a new event still continues this alert.
    """

    id: str
    model: str
    metrics: list[str]
    start: str
    end: str
    peak_score: float
    peak_time: str
    threshold: float
    peak_ratio: float
    severity: str
    n_points: int
    n_above: int
    versions: list[str]
    step_s: float
    gap_s: float
    sustained: int
    reported_at: str | None = None
    resolved_at: str | None = None
    severity_reported: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def covers(self, start: pd.Timestamp, end: pd.Timestamp) -> bool:
        """Whether ``[start, end]`` lies inside the alert: a duplicate, e.g. re-scored after a crash."""
        return pd.Timestamp(self.start) <= start and end <= pd.Timestamp(self.end)

    def continued_by(self, start: pd.Timestamp) -> bool:
        """Whether an event starting at ``start`` belongs to this alert rather than a new one."""
        return pd.Timestamp(self.start) <= start <= pd.Timestamp(self.end) + pd.Timedelta(seconds=self.gap_s)


@dataclass
class Ledger:
    """Everything the report keeps between runs (the JSON file's content)."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    processed_events: set[str] = field(default_factory=set)
    processed_runs: set[str] = field(default_factory=set)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    last_report: str | None = None
    parked: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ledger_version": LEDGER_VERSION,
            "last_report": self.last_report,
            "alerts": {key: asdict(alert) for key, alert in sorted(self.alerts.items())},
            "processed_events": sorted(self.processed_events),
            "processed_runs": sorted(self.processed_runs),
            "outbox": self.outbox,
            "parked": self.parked,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "the report state") -> Ledger:
        """Read a ledger; the earlier layouts (``{"reported": [...]}``, version 2 without ``parked``) are taken over.

        Anything else (a list, a missing field, an alert without its
        fields, a time that is not one) is a one-line :class:`DataError`
        naming ``where``: a damaged ledger is reported, never half-read.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"{where} is not a report ledger: it holds a {type(data).__name__}, not a mapping")
        version = data.get("ledger_version", 1)
        if type(version) is not int or not 1 <= version <= LEDGER_VERSION:
            raise DataError(f"{where} has ledger_version {excerpt(version)}; this version reads {LEDGER_VERSION} and the layouts before it")
        try:
            if version == 1:
                return cls(processed_events=set(_texts(data.get("reported", []))))
            return cls(
                alerts={str(key): _alert(value) for key, value in data["alerts"].items()},
                processed_events=set(_texts(data["processed_events"])),
                processed_runs=set(_texts(data["processed_runs"])),
                outbox=_deliveries(data["outbox"], "queued_at"),
                last_report=_time(data["last_report"]),
                parked=_deliveries(data["parked"], "parked_at") if version >= 3 else [],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"missing {excerpt(exc.args[0])}" if isinstance(exc, KeyError) else _clip(" ".join(str(exc).split()))
            raise DataError(f"{where} is not a report ledger: {problem}") from exc


def _texts(items: Any) -> list[str]:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise TypeError(f"expected a list of names, got a {type(items).__name__}")
    return items


def _time(value: Any) -> str | None:
    """An ISO time with its zone, kept as text, checked to be one (``None`` passes)."""
    if value is not None and pd.Timestamp(str(value)).tzinfo is None:
        raise ValueError(f"time {excerpt(value)} has no time zone")
    return value


def _clip(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _alert(value: Any) -> Alert:
    """An alert from its JSON, with its times checked, so a damaged one is refused when read, not when used."""
    alert = Alert(**value)
    for stamp in (alert.start, alert.end, alert.peak_time, alert.reported_at, alert.resolved_at):
        _time(stamp)
    return alert


def _deliveries(items: Any, stamp: str) -> list[dict[str, Any]]:
    """Outbox or parked entries: mappings with a text ``key``, a mapping ``payload`` and a time ``stamp``."""
    if not isinstance(items, list):
        raise TypeError(f"expected a list of deliveries, got a {type(items).__name__}")
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("payload"), dict)):
            raise TypeError("a delivery lacks its key or payload")
        if _time(item.get(stamp)) is None:
            raise TypeError(f"a delivery lacks its {stamp}")
    return list(items)


@dataclass(frozen=True)
class GroupInfo:
    """What the ledger needs to know of a model: where its scoring stands and how its events merge."""

    last_scored: pd.Timestamp | None
    step_s: float = 0.0
    gap_s: float = 0.0
    sustained: int = 0


@dataclass(frozen=True)
class Change:
    """What happened to one alert during one report run."""

    alert: Alert
    state: str
    extended: bool = False
    escalated_from: str | None = None


def alert_id(model: str, start: pd.Timestamp) -> str:
    """Stable id of an alert: the same model and start give the same id in every run and on every machine."""
    digest = hashlib.sha256(f"{model}\0{pd.Timestamp(start).isoformat()}".encode()).hexdigest()
    return digest[:16]


def apply_events(ledger: Ledger, events: pd.DataFrame, groups: Mapping[str, GroupInfo]) -> tuple[set[str], set[str], set[str]]:
    """Fold a run's fresh events into the ledger's alerts.

    Returns the ids of alerts opened, extended and escalated. An event
    wholly inside an alert of its model (a re-scored duplicate) changes
    nothing; one that starts within the merge gap after an open alert's end
    extends it; anything else opens a new alert.
    """
    opened: set[str] = set()
    extended: set[str] = set()
    escalated: set[str] = set()
    for row in events.sort_values(["start", "model"], kind="stable").itertuples(index=False):
        start, end = pd.Timestamp(row.start), pd.Timestamp(row.end)
        mine = [a for a in ledger.alerts.values() if a.model == row.model]
        if any(a.covers(start, end) for a in mine):
            continue
        target = next((a for a in mine if a.open and a.continued_by(start)), None)
        info = groups.get(str(row.model), GroupInfo(None))
        if target is None:
            target = _open(row, info)
            ledger.alerts[target.id] = target
            opened.add(target.id)
            continue
        before = target.severity
        _extend(target, row, info)
        extended.add(target.id)
        if _RANK[target.severity] > _RANK[before] and target.id not in opened:
            escalated.add(target.id)
    return opened, extended, escalated


def _open(row: Any, info: GroupInfo) -> Alert:
    ratio = _ratio(row.peak_score, row.threshold)
    return Alert(
        id=alert_id(row.model, row.start),
        model=str(row.model),
        metrics=_split(row.metric),
        start=pd.Timestamp(row.start).isoformat(),
        end=pd.Timestamp(row.end).isoformat(),
        peak_score=float(row.peak_score),
        peak_time=pd.Timestamp(row.peak_time).isoformat(),
        threshold=float(row.threshold),
        peak_ratio=ratio,
        severity=str(row.severity),
        n_points=int(row.n_points),
        n_above=int(row.n_above),
        versions=[str(row.version)],
        step_s=info.step_s,
        gap_s=info.gap_s,
        sustained=info.sustained,
    )


def _extend(alert: Alert, row: Any, info: GroupInfo) -> None:
    """Add a continuing event: the span grows, the peak is the higher one, severity never drops."""
    alert.step_s = info.step_s or alert.step_s
    alert.end = max(pd.Timestamp(alert.end), pd.Timestamp(row.end)).isoformat()
    if alert.step_s > 0:  # the span, gap included: what a person reads as "how long"
        alert.n_points = int(round((pd.Timestamp(alert.end) - pd.Timestamp(alert.start)) / pd.Timedelta(seconds=alert.step_s))) + 1
    else:
        alert.n_points += int(row.n_points)
    alert.n_above += int(row.n_above)
    alert.metrics += [m for m in _split(row.metric) if m not in alert.metrics]
    if str(row.version) not in alert.versions:
        alert.versions.append(str(row.version))
    ratio = _ratio(row.peak_score, row.threshold)
    if ratio > alert.peak_ratio:
        alert.peak_ratio, alert.peak_score, alert.threshold = ratio, float(row.peak_score), float(row.threshold)
        alert.peak_time = pd.Timestamp(row.peak_time).isoformat()
    alert.gap_s, alert.sustained = info.gap_s or alert.gap_s, info.sustained or alert.sustained
    level = severity(alert.peak_ratio, 1.0, alert.n_above, alert.sustained)
    alert.severity = max(level, str(row.severity), alert.severity, key=_RANK.__getitem__)


def resolve(ledger: Ledger, groups: Mapping[str, GroupInfo], now: pd.Timestamp) -> set[str]:
    """Close the open alerts whose model has scored past their end and the merge gap; returns their ids."""
    closed = set()
    for alert in ledger.alerts.values():
        info = groups.get(alert.model)
        if not alert.open or info is None or info.last_scored is None:
            continue
        if info.last_scored > pd.Timestamp(alert.end) + pd.Timedelta(seconds=alert.gap_s):
            alert.resolved_at = now.isoformat()
            closed.add(alert.id)
    return closed


def advance(ledger: Ledger, events: pd.DataFrame, groups: Mapping[str, GroupInfo], now: pd.Timestamp) -> list[Change]:
    """One report run's step of the state machine; returns what to report, and marks it reported.

    An alert is new until a report has carried it (so a report run that
    crashed before saving the ledger loses nothing), and reported as new
    even when it already ended;
    alerts reported before are reported as ongoing while open, then once as
    resolved. Resolved alerts older than :data:`KEEP_RESOLVED` are dropped.
    """
    _, extended, escalated = apply_events(ledger, events, groups)
    closed = resolve(ledger, groups, now)
    changes = []
    for alert in ledger.alerts.values():
        if alert.reported_at is None:
            changes.append(Change(alert, "new"))
        elif alert.open:
            changes.append(Change(alert, "ongoing", alert.id in extended, alert.severity_reported if alert.id in escalated else None))
        elif alert.id in closed:
            changes.append(Change(alert, "resolved", alert.id in extended))
    for change in changes:
        change.alert.reported_at = change.alert.reported_at or now.isoformat()
        change.alert.severity_reported = change.alert.severity
    _forget_old(ledger, now)
    return sorted(changes, key=change_order)


def change_order(change: Change) -> tuple[int, int, float, str, str]:
    """New before ongoing before resolved; within each, most severe first, then highest peak, then oldest."""
    a = change.alert
    return (STATES.index(change.state), -_RANK[a.severity], -a.peak_ratio, a.start, a.id)


def _forget_old(ledger: Ledger, now: pd.Timestamp) -> None:
    for key in [k for k, a in ledger.alerts.items() if a.resolved_at and now - pd.Timestamp(a.resolved_at) > KEEP_RESOLVED]:
        del ledger.alerts[key]


def _ratio(peak: float, threshold: float) -> float:
    return float(peak) / float(threshold) if threshold > 0 else float("inf")


def _split(metrics: Any) -> list[str]:
    return [m for m in str(metrics).split(",") if m]


def counts(changes: Iterable[Change], state: str) -> dict[str, int]:
    """Alerts of one state by severity, most severe first, zero counts left out."""
    found: dict[str, int] = {}
    for level in reversed(SEVERITY_LEVELS):
        n = sum(1 for c in changes if c.state == state and c.alert.severity == level)
        if n:
            found[level] = n
    return found
