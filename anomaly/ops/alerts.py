"""The report ledger: alerts announced once, followed while open, closed once.

Score runs decide what an alert is (:class:`anomaly.core.events.AlertTracker`:
flags merged over the merge gap, firing on the ``min_length``-th flagged
point once the metric has left its expected range, over once the gap has
passed quietly) and write a row per alert they
touched. The ledger folds those rows into one record per alert and moves
each through three states:

- **new**: the first report that sees it announces it;
- **ongoing**: later reports list it while it is open;
- **resolved**: once a score run has closed it, the next report says so,
  once, and stops.

Folding a row is idempotent (spans and counts only grow, the peak is the
highest), so a row a retried score run writes again changes nothing. The
ledger is plain JSON kept beside the reports (``reports/state.json``),
written atomically after each report, so it survives restarts; a report run
that crashes before writing it is simply done again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from anomaly.core.events import SEVERITY_LEVELS
from anomaly.core.migrations import CURRENT, upgrade
from anomaly.errors import AnomalyError, DataError, excerpt

#: Version of the ledger's layout (see :mod:`anomaly.core.migrations`).
LEDGER_VERSION = CURRENT["ledger"]
#: Resolved alerts are forgotten after this long: late duplicates of older events are unlikely.
KEEP_RESOLVED = pd.Timedelta("7D")
STATES: tuple[str, ...] = ("new", "ongoing", "resolved")
_RANK = {level: rank for rank, level in enumerate(SEVERITY_LEVELS)}


@dataclass
class Alert:
    """One incident of one model, as the score runs' alert rows describe it.

    Times are ISO 8601 strings in UTC so the ledger is plain JSON.
    ``peak_ratio`` is the highest score over its threshold, so parts scored
    by different model versions compare fairly.
    """

    id: str
    model: str
    metrics: list[str]
    start: str
    end: str
    onset: str
    peak_score: float
    peak_time: str
    threshold: float
    peak_ratio: float
    severity: str
    n_points: int
    n_above: int
    versions: list[str]
    step_s: float
    reported_at: str | None = None
    resolved_at: str | None = None
    severity_reported: str | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


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
        """Read a ledger of this layout or an earlier one (upgraded, see :mod:`anomaly.core.migrations`).

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
            data = upgrade("ledger", dict(data), version, where)
            return cls(
                alerts={str(key): _alert(value) for key, value in data["alerts"].items()},
                processed_events=set(_texts(data["processed_events"])),
                processed_runs=set(_texts(data["processed_runs"])),
                outbox=_deliveries(data["outbox"], "queued_at"),
                last_report=_time(data["last_report"]),
                parked=_deliveries(data["parked"], "parked_at"),
            )
        except AnomalyError:
            raise
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
    for stamp in (alert.start, alert.end, alert.onset, alert.peak_time, alert.reported_at, alert.resolved_at):
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
class Change:
    """What happened to one alert during one report run."""

    alert: Alert
    state: str
    extended: bool = False
    escalated_from: str | None = None


def apply_alerts(ledger: Ledger, rows: pd.DataFrame, steps: Mapping[str, float], now: pd.Timestamp) -> tuple[set[str], set[str], set[str], set[str]]:
    """Fold score runs' alert rows into the ledger; returns the ids opened, extended, escalated and closed.

    ``steps`` gives each model's sampling interval in seconds (for durations).
    """
    opened: set[str] = set()
    extended: set[str] = set()
    escalated: set[str] = set()
    closed: set[str] = set()
    for row in rows.sort_values(["end", "model"], kind="stable").itertuples(index=False):
        alert = ledger.alerts.get(str(row.id))
        if alert is None:
            alert = _open(row, steps.get(str(row.model), 0.0))
            ledger.alerts[alert.id] = alert
            opened.add(alert.id)
        else:
            end, level = alert.end, alert.severity
            _fold(alert, row)
            if alert.end != end:
                extended.add(alert.id)
            if _RANK[alert.severity] > _RANK[level] and alert.id not in opened:
                escalated.add(alert.id)
        if bool(row.closed) and alert.open:
            alert.resolved_at = now.isoformat()
            closed.add(alert.id)
    return opened, extended, escalated, closed


def _open(row: Any, step_s: float) -> Alert:
    return Alert(
        id=str(row.id),
        model=str(row.model),
        metrics=_split(row.metric),
        start=pd.Timestamp(row.start).isoformat(),
        end=pd.Timestamp(row.end).isoformat(),
        onset=pd.Timestamp(row.onset).isoformat(),
        peak_score=float(row.peak_score),
        peak_time=pd.Timestamp(row.peak_time).isoformat(),
        threshold=float(row.threshold),
        peak_ratio=_ratio(row.peak_score, row.threshold),
        severity=str(row.severity),
        n_points=int(row.n_points),
        n_above=int(row.n_above),
        versions=[str(row.version)],
        step_s=step_s,
    )


def _fold(alert: Alert, row: Any) -> None:
    """A later (or repeated) row of the alert: spans and counts only grow, the peak is the higher, severity never drops."""
    alert.end = max(pd.Timestamp(alert.end), pd.Timestamp(row.end)).isoformat()
    alert.n_points = max(alert.n_points, int(row.n_points))
    alert.n_above = max(alert.n_above, int(row.n_above))
    alert.metrics += [m for m in _split(row.metric) if m not in alert.metrics]
    if str(row.version) not in alert.versions:
        alert.versions.append(str(row.version))
    ratio = _ratio(row.peak_score, row.threshold)
    if ratio > alert.peak_ratio:
        alert.peak_ratio, alert.peak_score, alert.threshold = ratio, float(row.peak_score), float(row.threshold)
        alert.peak_time = pd.Timestamp(row.peak_time).isoformat()
    alert.severity = max(str(row.severity), alert.severity, key=_RANK.__getitem__)


def advance(ledger: Ledger, rows: pd.DataFrame, steps: Mapping[str, float], now: pd.Timestamp) -> list[Change]:
    """One report run's step of the state machine; returns what to report, and marks it reported.

    An alert is new until a report has carried it (so a report run that
    crashed before saving the ledger loses nothing), and reported as new
    even when it already ended; alerts reported before are reported as
    ongoing while open, then once as resolved. Resolved alerts older than
    :data:`KEEP_RESOLVED` are dropped.
    """
    _, extended, escalated, closed = apply_alerts(ledger, rows, steps, now)
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
