"""Alerts to a Prometheus Alertmanager (``POST /api/v2/alerts``), firing while open, then resolved.

Each report run sends every open alert of the ledger as firing (labels
``alertname``, ``metric``, ``model``, ``severity``, and the source labels
its series share, from the store's series catalogue, so routes can match
them; one named like ours is sent as ``exported_<name>``; annotations with the
summary, observed against expected in the metric's units, the runbook,
dashboard and report links; ``startsAt`` when the anomaly started;
``endsAt`` :attr:`Alertmanager.ends_in` seconds ahead, renewed by each run),
and an alert the ledger closed once more with ``endsAt`` when it ended.
Alertmanager knows an alert by its labels, so a re-send with the same
labels and ``startsAt`` updates the one alert it has rather than adding one.

What was sent is kept beside the ledger (``reports/alertmanager.json``,
written atomically before and after each send): an alert's labels and
``startsAt`` are fixed when it is first seen, so after a restart the same
alert goes out the same way, and a resolution that could not be delivered
is sent again by the next run. When an alert's severity rises its labels
change: the old label set is resolved and the new one fires, with the same
``startsAt``. An Alertmanager that is down or refuses costs one line in the
report's delivery summary and the log; the ledger and the report are
already written.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import httpx
import pandas as pd

from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.errors import ConfigError, DataError, excerpt
from anomaly.io.catalogue import Series, common_labels, output_labels
from anomaly.ops.alerts import Alert, Ledger
from anomaly.ops.endpoints import check_timeout, check_url, where
from anomaly.ops.latest import SeriesPoint
from anomaly.ops.links import Templates, check_template, fill, templates
from anomaly.ops.workspace import Workspace

log = logging.getLogger(__name__)

ALERTNAME = "AnomalyDetected"
#: Layout of ``reports/alertmanager.json``.
STATE_VERSION = 1
#: Seconds a firing alert stays active without a re-send (default 900: three 5-minute report runs),
#: so an alert whose sender stopped expires on its own instead of firing for ever.
ENDS_IN_S = 900.0
#: A resolution still undelivered after this long is dropped (and the drop logged).
PENDING_EXPIRY = pd.Timedelta("7D")
MAX_TIMEOUT_S = 300.0
#: Bytes of a refusal's body kept for its reason.
ANSWER_LIMIT = 300


@dataclass(frozen=True)
class Alertmanager:
    """Where to send alerts, and the links their annotations carry.

    ``runbook_url`` and ``dashboard_url`` are each a template (``{metric}``,
    ``{model}``, ``{severity}``, ``{alert_id}``) or a mapping from a metric
    or model name, or ``"default"``, to one (:mod:`anomaly.ops.links`, which
    the report's ``links`` setting shares).
    """

    url: str
    timeout: float = 5.0
    ends_in: float | None = ENDS_IN_S
    runbook_url: Templates = field(default=())
    dashboard_url: Templates = field(default=())

    def __post_init__(self) -> None:
        check_url("alertmanager", self.url)
        check_timeout("alertmanager", self.timeout, MAX_TIMEOUT_S)
        if self.ends_in is not None and (isinstance(self.ends_in, bool) or not (isinstance(self.ends_in, (int, float)) and self.ends_in > 0)):
            raise ConfigError(f"alertmanager ends_in must be a number of seconds > 0 or null, got {excerpt(self.ends_in)}")
        for what, table in (("runbook_url", self.runbook_url), ("dashboard_url", self.dashboard_url)):
            for key, template in table:
                check_template("alertmanager", what, key, template)

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/api/v2/alerts"

    def where(self) -> str:
        return where(self.url)

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any] | Alertmanager | None) -> Alertmanager | None:
        """A URL, or ``{"url", "timeout", "ends_in", "runbook_url", "dashboard_url"}`` as flows and YAML carry it."""
        if spec is None or isinstance(spec, Alertmanager):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"alertmanager must be a URL or a mapping, got a {type(spec).__name__}")
        unknown = set(spec) - {"url", "timeout", "ends_in", "runbook_url", "dashboard_url"}
        if unknown or "url" not in spec:
            keys = excerpt(sorted(map(str, spec)), 200)
            raise ConfigError(f"alertmanager needs a url and takes timeout, ends_in, runbook_url, dashboard_url; got keys {keys}")
        return cls(
            str(spec["url"]),
            spec.get("timeout", 5.0),
            spec.get("ends_in", ENDS_IN_S),
            templates("alertmanager", "runbook_url", spec.get("runbook_url")),
            templates("alertmanager", "dashboard_url", spec.get("dashboard_url")),
        )

    def link(self, which: str, alert: Alert) -> str | None:
        """The runbook or dashboard URL for ``alert`` (metric, then model, then default), filled in."""
        table = self.runbook_url if which == "runbook_url" else self.dashboard_url
        return fill(table, alert.metrics[0] if alert.metrics else alert.model, alert.model, alert.severity, alert.id)


# -- the sender's state -----------------------------------------------------------------------


@dataclass
class Sent:
    """One ledger alert as Alertmanager knows it: labels and ``startsAt`` fixed at first sight."""

    labels: dict[str, str]
    starts_at: str
    ends_at: str | None = None  # set when the ledger closed the alert: then sent once more, resolved
    annotations: dict[str, str] = field(default_factory=dict)
    last_sent: str | None = None
    closed_at: str | None = None  # the report run that saw it closed (for expiry)


@dataclass
class SenderState:
    """What the sender keeps between runs: the alerts it follows, and label sets to resolve (after an escalation)."""

    alerts: dict[str, Sent] = field(default_factory=dict)
    retired: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATE_VERSION,
            "alerts": {k: vars(v) for k, v in sorted(self.alerts.items())},
            "retired": self.retired,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> SenderState:
        """The state as written by :meth:`to_json`; anything else is a one-line :class:`DataError` naming ``where``."""
        try:
            if data.get("format_version") != STATE_VERSION:
                raise ValueError(f"format_version {excerpt(data.get('format_version'))}, not {STATE_VERSION}")
            alerts = {str(k): Sent(**v) for k, v in data["alerts"].items()}
            retired = list(data["retired"])
            if not all(isinstance(r, dict) and isinstance(r.get("labels"), dict) for r in retired):
                raise ValueError("a retired entry lacks its labels")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where} is not an Alertmanager sender state: {exc}") from exc
        return cls(alerts, retired)


def load_state(space: Workspace) -> SenderState:
    path = space.alertmanager_state_path
    return SenderState.from_json(read_json(path, DataError), excerpt(str(path), 300)) if path.exists() else SenderState()


def save_state(space: Workspace, state: SenderState) -> None:
    space.reports_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(space.alertmanager_state_path, state.to_json())


# -- one report run's step --------------------------------------------------------------------


def alert_labels(alert: Alert, series_labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """What Alertmanager identifies and routes the alert by: ours, and its series' source labels (never over ours)."""
    own = {"alertname": ALERTNAME, "metric": alert.metrics[0] if alert.metrics else alert.model, "model": alert.model, "severity": alert.severity}
    return output_labels(own, series_labels or {})


def annotations(alert: Alert, point: SeriesPoint | None, config: Alertmanager, report: str) -> dict[str, str]:
    """Summary, observed against expected in the metric's units, and the links; only what is known."""
    metric = alert.metrics[0] if alert.metrics else alert.model
    ratio = f"{alert.peak_ratio:.2f}× threshold" if math.isfinite(alert.peak_ratio) else "threshold 0"
    out = {
        "summary": f"Anomaly in {', '.join(alert.metrics) or metric} (model {alert.model}): {alert.severity}, peak {ratio}",
        "alert_id": alert.id,
        "peak_score": f"{alert.peak_score:.6g}",
        "threshold": f"{alert.threshold:.6g}",
        "report": report,
    }
    if point is not None and point.value is not None and point.expected is not None:
        band = f" (band {point.lower:.6g} to {point.upper:.6g})" if point.band is not None else ""
        out["description"] = f"{metric} observed {point.value:.6g}, expected {point.expected:.6g}{band} at {point.timestamp}"
        out["observed"], out["expected"] = f"{point.value:.6g}", f"{point.expected:.6g}"
        if point.band is not None:
            out["expected_lower"], out["expected_upper"] = f"{point.lower:.6g}", f"{point.upper:.6g}"
    for which in ("runbook_url", "dashboard_url"):
        link = config.link(which, alert)
        if link:
            out[which] = link
    return out


def follow(
    state: SenderState,
    ledger: Ledger,
    fresh: set[str],
    points: Sequence[SeriesPoint],
    config: Alertmanager,
    report: str,
    now: pd.Timestamp,
    catalogue: Mapping[str, Series] | None = None,
) -> None:
    """Bring the sender's state up to the ledger: new alerts followed, escalations retired, closings noted.

    An alert is followed from when it is open, or first reported (``fresh``:
    one that opened and closed between two reports is sent once, resolved).
    Its labels include those its series share in ``catalogue``.
    """
    latest = {(p.model, p.metric): p for p in points}
    for alert in ledger.alerts.values():
        sent = state.alerts.get(alert.id)
        if sent is None and not (alert.open or alert.id in fresh):
            continue  # closed before this sender knew it: nothing to tell
        labels = alert_labels(alert, common_labels(catalogue or {}, alert.metrics or [alert.model]))
        if sent is None:
            sent = state.alerts[alert.id] = Sent(labels, _iso(alert.start))
        elif sent.labels != labels and sent.ends_at is None:  # severity rose: that label set is over
            state.retired.append({"labels": sent.labels, "starts_at": sent.starts_at, "ends_at": _iso(now), "annotations": sent.annotations})
            sent.labels = labels
        sent.annotations = annotations(alert, latest.get((labels["model"], labels["metric"])), config, report)
        if not alert.open and sent.ends_at is None:  # over once its last point's interval has passed
            sent.ends_at = _iso(max(pd.Timestamp(alert.end) + pd.Timedelta(seconds=max(alert.step_s, 1.0)), pd.Timestamp(sent.starts_at)))
            sent.closed_at = _iso(now)
    _expire(state, now)


def payload(state: SenderState, config: Alertmanager, wall: pd.Timestamp) -> list[dict[str, Any]]:
    """The alerts to POST: every followed alert (firing ones with ``endsAt`` ahead), then retired label sets.

    A resolution whose label set is also firing again (a new alert of the same
    series at the same severity) is left out: it would end the new one.
    """
    firing = [s for s in state.alerts.values() if s.ends_at is None]
    live = {_key(s.labels) for s in firing}
    out = []
    for sent in state.alerts.values():
        if sent.ends_at is None:  # ahead of the clock, and of startsAt (a clock behind the data's must not invert them)
            ends = _iso(max(wall, pd.Timestamp(sent.starts_at)) + pd.Timedelta(seconds=config.ends_in)) if config.ends_in else None
        elif _key(sent.labels) in live:
            continue
        else:
            ends = sent.ends_at
        out.append(_alert(sent.labels, sent.annotations, sent.starts_at, ends, sent.annotations.get("report")))
    out += [
        _alert(r["labels"], r.get("annotations", {}), r["starts_at"], r["ends_at"], r.get("annotations", {}).get("report"))
        for r in state.retired
        if _key(r["labels"]) not in live
    ]
    return out


def _alert(labels: Mapping[str, str], notes: Mapping[str, str], starts: str, ends: str | None, link: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"labels": dict(labels), "annotations": dict(notes), "startsAt": starts}
    if ends is not None:
        body["endsAt"] = ends
    if link:
        body["generatorURL"] = link
    return body


def delivered(state: SenderState, wall: pd.Timestamp) -> None:
    """After a 2xx answer: resolutions are done and forgotten, the firing alerts' last send noted."""
    for key in [k for k, s in state.alerts.items() if s.ends_at is not None]:
        del state.alerts[key]
    state.retired.clear()
    for sent in state.alerts.values():
        sent.last_sent = _iso(wall)


def send(config: Alertmanager, alerts: list[dict[str, Any]]) -> str | None:
    """POST the alerts in one request within ``timeout`` seconds; ``None`` on a 2xx answer, else why, in one line."""
    try:
        with httpx.Client(timeout=config.timeout, follow_redirects=False) as client:
            response = client.post(config.endpoint, json=alerts)
    except httpx.HTTPError as exc:
        return f"alertmanager {config.where()} unreachable: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if response.is_success:
        return None
    reason = " ".join(response.text[:ANSWER_LIMIT].split())
    return f"alertmanager {config.where()} refused {len(alerts)} alert(s): HTTP {response.status_code} {reason}".rstrip()


def sync(
    space: Workspace,
    ledger: Ledger,
    fresh: set[str],
    points: Sequence[SeriesPoint],
    config: Alertmanager,
    report: str,
    now: pd.Timestamp,
    wall: datetime | None = None,
    catalogue: Mapping[str, Series] | None = None,
) -> dict[str, Any]:
    """One report run's Alertmanager step: follow the ledger, save, send, and save what was delivered.

    ``now`` is the report's time (resolutions, retirements); ``wall`` the
    clock Alertmanager compares ``endsAt`` with (default: now, UTC).
    Returns counts and the error, if any, for the report's delivery summary.
    """
    clock = pd.Timestamp(wall or datetime.now(timezone.utc)).tz_convert("UTC")
    try:
        state = load_state(space)
    except DataError as exc:  # left as it is for a person to look at; the report and the ledger go on
        log.warning("nothing sent to the alertmanager: %s", exc)
        return {"where": config.where(), "firing": 0, "resolved": 0, "error": f"nothing sent: {exc}"}
    follow(state, ledger, fresh, points, config, report, now, catalogue)
    save_state(space, state)  # labels and startsAt are fixed before anything goes out
    alerts = payload(state, config, clock)
    firing = sum(1 for s in state.alerts.values() if s.ends_at is None)
    summary = {"where": config.where(), "firing": firing, "resolved": len(alerts) - firing, "error": None}
    if not alerts:
        return summary
    error = send(config, alerts)
    if error is None:
        delivered(state, clock)
        save_state(space, state)
    else:
        log.warning("%s; %d alert(s) go again with the next report", error, len(alerts))
    return {**summary, "error": error}


def _expire(state: SenderState, now: pd.Timestamp) -> None:
    """Forget resolutions undelivered for :data:`PENDING_EXPIRY`: the Alertmanager has expired them itself by then."""
    for key in [k for k, s in state.alerts.items() if s.closed_at and now - pd.Timestamp(s.closed_at) > PENDING_EXPIRY]:
        log.warning("dropping the resolution of alert %s: undelivered since %s", key, state.alerts[key].ends_at)
        del state.alerts[key]
    state.retired[:] = [r for r in state.retired if now - pd.Timestamp(r["ends_at"]) <= PENDING_EXPIRY]


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _iso(value: Any) -> str:
    """UTC, RFC 3339, as Alertmanager parses it."""
    return pd.Timestamp(value).tz_convert("UTC").isoformat()
