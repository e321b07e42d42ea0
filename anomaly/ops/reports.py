"""Alert reports: what is new since the last report, for people (Markdown, HTML) and machines (JSON).

A report run reads what the score runs left in the workspace since the
previous report (their run records and event parts), moves the alerts'
state machine one step (:mod:`anomaly.ops.alerts`), and writes one report in
three formats from a single JSON document:

- ``report-<time>.json``: the document, versioned by ``schema_version`` and
  described by ``anomaly/ops/schemas/report.schema.json``;
- ``report-<time>.md``: the text for a Prefect artifact or a chat message;
- ``report-<time>.html``: one self-contained page, plots embedded, that
  opens offline.

Only the generation time differs between two reports of the same inputs.
The ledger is saved after the report files, so a crash in between repeats
the report rather than losing it. New alerts then go to the optional
webhook through an outbox that keeps what could not be delivered, as do
escalations and resolutions; and every open alert goes to the optional
Alertmanager (:mod:`anomaly.ops.alertmanager`), firing until it resolves.
"""

from __future__ import annotations

import base64
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
from filelock import FileLock

from anomaly.core.fileio import atomic_write_json, atomic_write_text, read_json
from anomaly.errors import DataError, excerpt
from anomaly.io.catalogue import Series, common_labels
from anomaly.ops.alertmanager import Alertmanager, sync
from anomaly.ops.alerts import STATES, Change, Ledger, advance, counts
from anomaly.ops.latest import SeriesPoint, read_latest
from anomaly.ops.links import Links
from anomaly.ops.marks import Mark, MarkBook, load_marks, marks_since, precision, precision_text, silenced_until
from anomaly.ops.plotting import event_plot
from anomaly.ops.webhooks import Webhook, enqueue, flush
from anomaly.ops.workspace import Workspace

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schemas" / "report.schema.json"
TEMPLATE = "report.html.j2"
#: Run records older than this are deleted once a report has read them.
KEEP_RUNS = pd.Timedelta("7D")
#: Report files older than this are deleted by the next report run.
KEEP_REPORTS = pd.Timedelta("30D")
#: Points of context drawn on each side of an event, and the most drawn in all.
PLOT_CONTEXT, PLOT_MAX_POINTS = 60, 2_000
#: Alerts drawn per report, most severe first (about 0.25 s each): a wide outage must not
#: make every five-minute report take minutes and megabytes.
PLOT_LIMIT = 20
#: The Markdown lists this many models / unscored groups before summarising the rest.
LIST_LIMIT = 10
#: The Prefect event names automations can listen for (the webhook payloads name them too).
NEW_ALERT, ESCALATED_ALERT, RESOLVED_ALERT = "anomaly.alert.new", "anomaly.alert.escalated", "anomaly.alert.resolved"


@dataclass(frozen=True)
class Report:
    """A written report: its document, the Markdown text, its files, and what the run delivered."""

    document: dict[str, Any]
    markdown: str
    paths: dict[str, Path]
    delivery: dict[str, Any]

    @property
    def new_alerts(self) -> list[dict[str, Any]]:
        return [a for a in self.document["alerts"] if a["state"] == "new"]


def write_report(
    workspace: str | Path,
    *,
    now: datetime | None = None,
    report_url: str | None = None,
    webhook: Webhook | str | dict[str, Any] | None = None,
    announce: Callable[[Sequence[dict[str, Any]], str], None] | None = None,
    alertmanager: Alertmanager | str | dict[str, Any] | None = None,
    links: Links | Mapping[str, Any] | None = None,
) -> Report:
    """Write the report of everything new since the last one, then deliver alerts to the webhook and Alertmanager.

    ``report_url`` is the base URL the reports folder is served at, for the
    links in alerts (default: ``file://`` links to the folder). ``announce``
    is called with the new, escalated and resolved alerts and the report's link after
    the report files are written and before the ledger marks them reported
    (the flows emit Prefect events there): a crash in between announces
    them again rather than never. A quiet run still writes a short report
    that says so. ``links`` (``{"runbook_url", "dashboard_url"}``, templates
    as Alertmanager takes them, :mod:`anomaly.ops.links`) gives each alert
    its runbook and dashboard links.
    """
    space = Workspace(workspace)
    space.reports_dir.mkdir(parents=True, exist_ok=True)
    hook = Webhook.from_spec(webhook)
    manager = Alertmanager.from_spec(alertmanager)
    templates = Links.from_spec(links) or Links()
    # two report runs at once (a scheduled one and one started by hand) would both announce the same alerts
    with FileLock(space.report_lock_path):
        moment = pd.Timestamp(now or datetime.now(timezone.utc)).tz_convert("UTC")
        return _write_report(space, hook, moment, report_url, announce, manager, templates)


def _write_report(
    space: Workspace,
    hook: Webhook | None,
    moment: pd.Timestamp,
    report_url: str | None,
    announce: Callable[[Sequence[dict[str, Any]], str], None] | None,
    manager: Alertmanager | None = None,
    links: Links = Links(),
) -> Report:
    ledger = load_ledger(space.ledger_path)
    every_part = space.alert_parts()
    fresh_parts = [p for p in every_part if p not in ledger.processed_events]
    run_files = [name for name in space.run_records() if name not in ledger.processed_runs]
    runs = [read_run(space.run_record_path(name)) for name in run_files]
    rows = space.read_alert_rows(fresh_parts)
    book, problem = _marks_or_problem(space)
    changes = advance(ledger, rows, model_steps(space, rows), moment)
    rejected = [item for item in ledger.parked if item.get("reported_at") is None]  # refused since the last report
    # new alerts, and ongoing ones that grew, most severe first: an unchanged alert's plot is unchanged
    drawn = [c for c in changes if c.state == "new" or (c.state == "ongoing" and c.extended)][:PLOT_LIMIT]
    points = read_latest(space)  # a damaged latest file is skipped with a warning naming it
    bands = latest_bands(points)
    evidence = {c.alert.id: _evidence(space, c, bands.get(c.alert.model, {})) for c in drawn}
    facts = {k: Evidence(v.shares, v.peak) for k, v in evidence.items()}
    catalogue, labels_problem = _catalogue_or_problem(space)
    document = build_document(changes, runs, moment, ledger.last_report, facts, rejected, points, links, book, problem, catalogue, labels_problem)
    plots = {k: v.plot for k, v in evidence.items() if v.plot is not None}
    markdown = render_markdown(document)
    paths = space.report_paths(moment)
    atomic_write_json(paths["json"], document)
    atomic_write_text(paths["markdown"], markdown)
    atomic_write_text(paths["html"], render_html(document, plots))
    link = report_link(paths["html"], report_url)
    if announce is not None:
        announce([a for a in document["alerts"] if announced(a)], link)
    if hook is not None:
        for alert in document["alerts"]:
            if announced(alert):
                item = alert_payload(alert, link)
                enqueue(ledger.outbox, item["key"], item, moment)
    ledger.processed_events = (ledger.processed_events & set(every_part)) | set(fresh_parts)  # replaced parts are forgotten
    ledger.processed_runs |= set(run_files)
    ledger.last_report = moment.isoformat()
    for item in rejected:
        item["reported_at"] = moment.isoformat()
    save_ledger(space.ledger_path, ledger)  # the commit point: from here on this report's alerts are reported
    delivery = flush(ledger.outbox, hook, moment, ledger.parked)
    manager_summary = None
    if manager is not None:  # its own state file, saved before and after sending: the ledger's save stays last
        fresh = {c.alert.id for c in changes if c.state == "new"}
        quiet = {a["id"] for a in document["alerts"] if a["silenced_until"]}  # a silenced series pages nobody
        followed = replace(ledger, alerts={k: a for k, a in ledger.alerts.items() if k not in quiet})
        if labels_problem is None:
            manager_summary = sync(space, followed, fresh, points, manager, link, moment, catalogue=catalogue)
        else:  # without its labels an alert would be routed elsewhere: nothing goes until the catalogue is fixed
            manager_summary = {"where": manager.where(), "firing": 0, "resolved": 0, "error": f"nothing sent: {labels_problem}"}
    _prune_runs(space, ledger, moment)
    save_ledger(space.ledger_path, ledger)
    _prune_reports(space, moment)
    return Report(document, markdown, paths, {**delivery, "link": link, "webhook": hook.where() if hook else None, "alertmanager": manager_summary})


# -- reading what the score runs left -------------------------------------------------------


def load_ledger(path: Path) -> Ledger:
    """The ledger at ``path`` (a new one if none); a damaged one is a :class:`DataError` naming it, and is left as it is."""
    return Ledger.from_json(read_json(path, DataError), excerpt(str(path), 300)) if path.exists() else Ledger()


def _marks_or_problem(space: Workspace) -> tuple[MarkBook, str | None]:
    """The workspace's marks; a damaged marks file is logged and named in the report, never a reason to stop reporting."""
    try:
        return load_marks(space), None
    except DataError as exc:
        log.warning("marks left out of the report: %s", exc)
        return MarkBook(), str(exc)


def _catalogue_or_problem(space: Workspace) -> tuple[dict[str, Series], str | None]:
    """The store's series catalogue (labels); a damaged one is logged and named in the report, never a reason to stop reporting."""
    try:
        return space.store().series(), None
    except DataError as exc:
        log.warning("alerts reported without their labels, and nothing sent to Alertmanager: %s", exc)
        return {}, str(exc)


def read_run(path: Path) -> dict[str, Any]:
    """A score run's record; one that is not ``{"results": [{"group", "status", ...}, ...]}`` is a :class:`DataError` naming it."""
    record = read_json(path, DataError)
    results = record.get("results") if isinstance(record, dict) else None
    if not (isinstance(results, list) and all(isinstance(r, dict) and isinstance(r.get("group"), str) and isinstance(r.get("status"), str) for r in results)):
        raise DataError(f"{excerpt(str(path), 300)} is not a score run's record: delete it or move it out of the way")
    return record


def save_ledger(path: Path, ledger: Ledger) -> None:
    atomic_write_json(path, ledger.to_json())


def model_steps(space: Workspace, rows: pd.DataFrame) -> dict[str, float]:
    """Each model's sampling interval in seconds, from its score state (for durations)."""
    steps = {}
    for model in sorted(set(rows["model"].astype(str))):
        state = space.score_state(model)
        steps[model] = state.step_s if state is not None else 0.0
    return steps


# -- the document ---------------------------------------------------------------------------


def build_document(
    changes: Sequence[Change],
    runs: Sequence[Mapping[str, Any]],
    moment: pd.Timestamp,
    since: str | None,
    evidence: Mapping[str, Evidence] | None = None,
    rejected: Sequence[Mapping[str, Any]] = (),
    points: Sequence[SeriesPoint] = (),
    links: Links = Links(),
    book: MarkBook | None = None,
    marks_problem: str | None = None,
    catalogue: Mapping[str, Series] | None = None,
    labels_problem: str | None = None,
) -> dict[str, Any]:
    """The report as plain data: the one source the three formats are rendered from.

    ``evidence`` is what the drawn alerts' scores showed (contributions, the
    peak point); ``rejected`` are the parked webhook deliveries no report has
    named yet (:mod:`anomaly.ops.webhooks`): each is listed once, in the next
    report. ``points`` are the series' latest points (observed against
    expected, the band), ``links`` the runbook and dashboard templates.
    ``book`` holds people's marks (:mod:`anomaly.ops.marks`): each alert
    shows its mark, new alerts of a silenced series are counted and listed
    as silenced (not announced), and ``feedback`` lists the marks made since
    the last report and each model's precision as marked. ``catalogue``
    (the store's series catalogue) gives each alert the ``labels`` its
    series share; ``labels_problem`` says why it could not be read.
    """
    latest = {(p.model, p.metric): p for p in points}
    book = book or MarkBook()
    results = [r for run in runs for r in run["results"]]
    scored = [r for r in results if r["status"] == "scored"]
    current = book.current()
    alerts = [
        _alert(
            c,
            (evidence or {}).get(c.alert.id, Evidence()),
            latest,
            links,
            current.get(c.alert.id),
            silenced_until(book, c.alert.model, c.alert.metrics, c.alert.reported_at),
            common_labels(catalogue or {}, c.alert.metrics or [c.alert.model]),
        )
        for c in changes
    ]
    quiet = {a["id"] for a in alerts if a["silenced_until"] and a["state"] == "new"}
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": moment.isoformat(),
        "since": since,
        "period": {
            "from": min((r["from"] for r in scored), default=None),
            "to": max((r["to"] for r in scored), default=None),
            "score_runs": len(runs),
            "points": sum(int(r["points"]) for r in scored),
        },
        "metrics_scored": sorted({m for r in scored for m in r.get("metrics", [r["group"]])}),
        "models": [{"model": g, "versions": sorted({r["version"] for r in scored if r["group"] == g})} for g in sorted({r["group"] for r in scored})],
        "not_scored": _not_scored(results),
        "no_new_data": sorted({r["group"] for r in results if r["status"] == "no-new-data"} - {r["group"] for r in scored}),
        "counts": {state: counts([c for c in changes if c.alert.id not in quiet], state) for state in STATES},
        "alerts": alerts,
        "rejected_deliveries": [_rejected(item) for item in rejected],
        "labels_problem": labels_problem,
        "feedback": {
            "silenced": len(quiet),
            "marks": [m.to_json() for m in marks_since(book, since)],
            "precision": precision(book),
            "problem": marks_problem,
        },
    }


def _rejected(item: Mapping[str, Any]) -> dict[str, Any]:
    """A parked delivery as the report names it: which alert, why the webhook refused it, and when."""
    payload = item.get("payload", {})
    return {
        "key": item["key"],
        "metric": payload.get("metric"),
        "severity": payload.get("severity"),
        "reason": str(item.get("reason", "")),
        "queued_at": item.get("queued_at"),
        "parked_at": item["parked_at"],
        "attempts": int(item.get("attempts", 0)),
    }


def _not_scored(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Groups whose latest attempt in the period failed or found no model, with the reason and how often."""
    latest: dict[str, Mapping[str, Any]] = {}
    failures: dict[str, int] = {}
    for r in results:
        latest[r["group"]] = r
        if r["status"] in ("failed", "no-model"):
            failures[r["group"]] = failures.get(r["group"], 0) + 1
    return [
        {"model": g, "metrics": list(r.get("metrics", [g])), "status": r["status"], "reason": r.get("message", ""), "runs": failures[g]}
        for g, r in sorted(latest.items())
        if r["status"] in ("failed", "no-model")
    ]


@dataclass(frozen=True)
class Evidence:
    """What one read of an alert's scores gave: its plot, the metrics' contributions, its primary metric at the peak."""

    shares: list[dict[str, Any]] = field(default_factory=list)
    peak: dict[str, Any] | None = None
    plot: bytes | None = None


def latest_bands(points: Sequence[SeriesPoint]) -> dict[str, dict[str, float]]:
    """Each model's band half-width per metric, in the metric's units, from its latest points (no model is loaded)."""
    bands: dict[str, dict[str, float]] = {}
    for p in points:
        if p.band is not None:
            bands.setdefault(p.model, {})[p.metric] = p.band
    return bands


def observation(metric: str, when: str, at: str, value: float | None, expected: float | None, band: float | None) -> dict[str, Any] | None:
    """One observed-against-expected entry in the metric's units, with the expected range when the band is known."""
    if value is None or expected is None:
        return None
    lower, upper = (expected - band, expected + band) if band is not None else (None, None)
    return {"metric": metric, "when": when, "at": at, "value": value, "expected": expected, "lower": lower, "upper": upper}


def _alert(
    change: Change,
    evidence: Evidence,
    latest: Mapping[tuple[str, str], SeriesPoint],
    links: Links,
    mark: Mark | None = None,
    silenced: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    a = change.alert
    start, end = pd.Timestamp(a.start), pd.Timestamp(a.end)
    metric = a.metrics[0] if a.metrics else a.model
    observed = [evidence.peak] if evidence.peak else []
    for name in a.metrics[:3]:
        p = latest.get((a.model, name))
        entry = observation(name, "latest", p.timestamp, p.value, p.expected, p.band) if p is not None else None
        if entry is not None:
            observed.append(entry)
    return {
        "id": a.id,
        "state": change.state,
        "model": a.model,
        "metrics": list(a.metrics),
        "start": a.start,
        "end": a.end,
        "duration_s": (end - start).total_seconds() + a.step_s,
        "open": a.open,
        "peak_score": _finite(a.peak_score),
        "peak_time": a.peak_time,
        "threshold": _finite(a.threshold),
        "peak_ratio": _finite(a.peak_ratio),
        "severity": a.severity,
        "escalated_from": change.escalated_from,
        "extended": change.extended,
        "n_points": a.n_points,
        "n_above": a.n_above,
        "versions": list(a.versions),
        "contributions": evidence.shares,
        "resolved_at": a.resolved_at,
        "observed": observed,
        "links": links.for_alert(metric, a.model, a.severity, a.id),
        "mark": None if mark is None else {k: mark.to_json()[k] for k in ("mark", "by", "at", "note")},
        "silenced_until": silenced,
        "labels": dict(labels or {}),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _evidence(space: Workspace, change: Change, bands: Mapping[str, float]) -> Evidence:
    """The event's plot (the expected range drawn from ``bands``), the metrics' contributions and the peak point, from one read."""
    a = change.alert
    start, end = pd.Timestamp(a.start), pd.Timestamp(a.end)
    step = pd.Timedelta(seconds=a.step_s) if a.step_s > 0 else max((end - start) / 10, pd.Timedelta("1min"))
    frame = space.read_scores(a.model, start - step * PLOT_CONTEXT, end + step * PLOT_CONTEXT)
    if frame.empty or "anomaly_score" not in frame.columns:
        return Evidence()
    frame = frame.iloc[-PLOT_MAX_POINTS:] if len(frame) > PLOT_MAX_POINTS else frame
    shares = contributions(frame, start, end)
    # the alert's own metrics first, in the order its heading names them; then the rest by share
    ranked = list(a.metrics) + [s["metric"] for s in shares if s["metric"] not in a.metrics]
    title = f"{a.severity} · {', '.join(a.metrics)} · model {a.model}"
    return Evidence(shares, peak_point(frame, ranked[0] if ranked else a.model, a.peak_time, bands), event_plot(frame, ranked, start, end, title, bands))


def peak_point(frame: pd.DataFrame, metric: str, peak_time: str, bands: Mapping[str, float]) -> dict[str, Any] | None:
    """The metric's observed and expected value at the alert's peak (the scored point nearest it), or ``None``."""
    recon = f"reconstruction_{metric}"
    if metric not in frame.columns or recon not in frame.columns or frame.empty:
        return None
    i = min(int(frame.index.searchsorted(pd.Timestamp(peak_time))), len(frame) - 1)  # the peak, or the first point after it
    value, expected = _number(frame[metric].iloc[i]), _number(frame[recon].iloc[i])
    return observation(metric, "peak", frame.index[i].isoformat(), value, expected, bands.get(metric))


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def contributions(frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> list[dict[str, Any]]:
    """For a multi-metric model, each metric's share of the summed per-metric scores over the event."""
    columns = [c for c in frame.columns if c.startswith("score_")]
    if len(columns) < 2:
        return []
    totals = frame.loc[start:end, columns].sum()
    whole = float(totals.sum())
    if not whole > 0:
        return []
    shares = sorted(((c.removeprefix("score_"), float(v) / whole) for c, v in totals.items()), key=lambda kv: (-kv[1], kv[0]))
    return [{"metric": m, "share": round(s, 4)} for m, s in shares]


# -- rendering ------------------------------------------------------------------------------


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The report as Markdown: summary first, then new alerts most severe first, then ongoing and resolved."""
    new = [a for a in doc["alerts"] if a["state"] == "new" and not a.get("silenced_until")]
    lines = [f"# Anomaly report — {_when(doc['generated_at'])}", ""]
    lines.append(f"**{headline(doc)}**")
    lines += ["", *[f"- {line}" for line in summary_lines(doc)], ""]
    if not new:
        lines += ["No new anomalies.", ""]
    for i, a in enumerate(new, 1):
        links = [f"- {name}: {url}" for name, url in a.get("links", {}).items()]
        lines += [f"## {i}. {a['severity'].upper()} — {', '.join(a['metrics'])}", "", *[f"- {x}" for x in alert_lines(a)], *links, ""]
    for state, title in (("ongoing", "Ongoing"), ("resolved", "Resolved")):
        rows = [a for a in doc["alerts"] if a["state"] == state]
        if rows:
            last = "resolved at" if state == "resolved" else "latest observed"
            lines += [f"## {title}", "", f"| severity | metric(s) | start | end | peak / threshold | model | {last} | links |", "|---|---|---|---|---|---|---|---|"]
            lines += [
                f"| {a['severity']}{' ↑ from ' + a['escalated_from'] if a['escalated_from'] else ''} | {', '.join(a['metrics'])} "
                f"| {_when(a['start'])} | {_when(a['end'])}{' (open)' if a['open'] else ''} | {_ratio(a)} | {a['model']} "
                f"| {_when(a.get('resolved_at')) if state == 'resolved' else latest_text(a)} | {_markdown_links(a) or '—'} |"
                for a in rows
            ]
            lines.append("")
    lines += feedback_lines(doc)
    return "\n".join(lines)


def latest_text(a: Mapping[str, Any]) -> str:
    """The alert's primary metric now, observed against expected, for the tables."""
    found = [o for o in a.get("observed", []) if o["when"] == "latest"]
    return observed_text(found[0]) if found else "—"


def _markdown_links(a: Mapping[str, Any]) -> str:
    return " · ".join(f"[{name}]({url})" for name, url in a.get("links", {}).items())


def silenced_alerts(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The new alerts a silence kept from being announced."""
    return [a for a in doc["alerts"] if a["state"] == "new" and a.get("silenced_until")]


def mark_text(mark: Mapping[str, Any]) -> str:
    """``false-positive by alice on 2026-02-01 10:00 UTC: deploy`` (the note on one line)."""
    note = " ".join(str(mark.get("note") or "").split())
    return f"{mark['mark']} by {mark['by']} on {_when(mark['at'])}" + (f": {note}" if note else "")


def feedback_lines(doc: Mapping[str, Any]) -> list[str]:
    """The Markdown of silenced alerts, the marks made since the last report and each model's precision as marked."""
    feedback = doc.get("feedback") or {}
    lines: list[str] = []
    quiet = silenced_alerts(doc)
    if quiet:
        lines += ["## Silenced", ""]
        lines += [f"- {a['severity']} — {', '.join(a['metrics'])} (model {a['model']}) since {_when(a['start'])}: "
                  f"not announced, silenced until {_when(a['silenced_until'])}" for a in quiet]  # fmt: skip
        lines.append("")
    marks, rows = feedback.get("marks", []), [r for r in feedback.get("precision", []) if precision_text(r) != "no marks"]
    if marks or rows or feedback.get("problem"):
        lines += ["## Feedback", ""]
        lines += [f"- alert `{m['alert']}` ({', '.join(m['metrics']) or m['model']}, model {m['model']}): {mark_text(m)}"
                  + (f"; silenced until {_when(m['silence_until'])}" if m.get("silence_until") else "") for m in marks]  # fmt: skip
        lines += [f"- alert precision as marked, model {r['model']}: {precision_text(r)}" for r in rows]
        if feedback.get("problem"):
            lines.append(f"- **marks not read**: {feedback['problem']}")
        lines.append("")
    return lines


def headline(doc: Mapping[str, Any]) -> str:
    """One line: new alerts by severity, then how many are ongoing and resolved."""
    c = doc["counts"]
    new = sum(c["new"].values())
    parts = [f"{new} new alert{'s' if new != 1 else ''}" + (f" ({', '.join(f'{n} {s}' for s, n in c['new'].items())})" if new else "")]
    silenced = (doc.get("feedback") or {}).get("silenced", 0)
    if silenced:
        parts.append(f"{silenced} silenced")
    parts.append(f"{sum(c['ongoing'].values())} ongoing")
    parts.append(f"{sum(c['resolved'].values())} resolved")
    return " · ".join(parts)


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """The summary as short lines: coverage, models, what could not be scored."""
    p = doc["period"]
    if p["from"]:
        covered = f"covered {_when(p['from'])} → {_when(p['to'])}: {len(doc['metrics_scored'])} metric(s), {p['points']} point(s), {p['score_runs']} score run(s)"
    else:
        covered = f"no points scored since the last report ({p['score_runs']} score run(s))"
    models = doc["models"]
    shown = ", ".join(f"{m['model']} {'/'.join(m['versions'])}" for m in models[:LIST_LIMIT])
    lines = [covered]
    if models:
        lines.append(f"model versions: {shown}" + (f" and {len(models) - LIST_LIMIT} more" if len(models) > LIST_LIMIT else ""))
    for item in doc["not_scored"][:LIST_LIMIT]:
        lines.append(f"**not scored** {', '.join(item['metrics'])}: {item['status']} — {item['reason']} ({item['runs']} run(s))")
    if len(doc["not_scored"]) > LIST_LIMIT:
        lines.append(f"**not scored**: {len(doc['not_scored']) - LIST_LIMIT} more model(s), listed in the JSON report")
    if doc.get("labels_problem"):
        lines.append(f"**labels not read**, nothing sent to Alertmanager: {doc['labels_problem']}")
    if doc["no_new_data"]:
        lines.append(f"no new data for {len(doc['no_new_data'])} model(s): {', '.join(doc['no_new_data'][:LIST_LIMIT])}")
    rejected = doc.get("rejected_deliveries", [])
    for item in rejected[:LIST_LIMIT]:
        lines.append(
            f"**webhook rejected** alert {item['key']} ({item['metric'] or 'no metric'}, {item['severity'] or '—'}) on "
            f"{_when(item['parked_at'])}, not retried: {item['reason']}"
        )
    if len(rejected) > LIST_LIMIT:
        lines.append(f"**webhook rejected** {len(rejected) - LIST_LIMIT} more alert(s), listed in the JSON report and reports/state.json")
    return lines


def alert_lines(a: Mapping[str, Any]) -> list[str]:
    """An alert's facts, one per line, as both the Markdown and the HTML show them."""
    lines = [
        f"start {_when(a['start'])}, end {_when(a['end'])}" + (" (still open)" if a["open"] else "") + f", duration {_duration(a['duration_s'])}",
        f"peak score {a['peak_score']:.4g} at {_when(a['peak_time'])} against threshold {a['threshold']:.4g} ({_ratio(a)}); "
        f"above it for {a['n_above']} of {a['n_points']} point(s)",
        f"severity {a['severity']}, model {a['model']} version {', '.join(a['versions'])}",
    ]
    if a.get("labels"):
        lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in a["labels"].items()))
    if a.get("mark"):
        lines.append("marked " + mark_text(a["mark"]))
    if a.get("silenced_until"):
        lines.append(f"silenced until {_when(a['silenced_until'])}: not announced")
    if a["contributions"]:
        lines.append("contributions: " + ", ".join(f"{c['metric']} {c['share']:.0%}" for c in a["contributions"][:5]))
    for item in a.get("observed", []):
        lines.append(("at the peak: " if item["when"] == "peak" else "latest: ") + observed_text(item))
    if a.get("resolved_at"):
        lines.append(f"resolved at {_when(a['resolved_at'])}")
    return lines


def observed_text(item: Mapping[str, Any]) -> str:
    """``requests 3,120 at 2026-01-08 04:30 UTC, expected 1,005 (expected range 905 to 1,105)``: in the metric's units."""
    band = f" (expected range {_num(item['lower'])} to {_num(item['upper'])})" if item["lower"] is not None else ""
    return f"{item['metric']} {_num(item['value'])} at {_when(item['at'])}, expected {_num(item['expected'])}{band}"


def _num(value: float) -> str:
    """A measurement as people read it: four significant digits, thousands separated."""
    return f"{value:,.4g}"


def render_html(doc: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, plots as ``data:`` PNGs, no script, nothing fetched."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("anomaly.ops", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    images = {key: base64.b64encode(data).decode("ascii") for key, data in plots.items()}
    return env.get_template(TEMPLATE).render(
        doc=doc, images=images, headline=headline(doc), summary=summary_lines(doc), alert_lines=alert_lines, when=_when, ratio=_ratio,
        latest_text=latest_text, plot_limit=PLOT_LIMIT, silenced=silenced_alerts(doc), mark_text=mark_text, precision_text=precision_text,
    )


def _when(iso: str | None) -> str:
    return pd.Timestamp(iso).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC") if iso else "—"


def _ratio(a: Mapping[str, Any]) -> str:
    return f"{a['peak_ratio']:.2f}× threshold" if a["peak_ratio"] is not None else "threshold 0"


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return " ".join(f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if n) or "0 min"


# -- delivery and housekeeping --------------------------------------------------------------


def report_link(html: Path, base_url: str | None) -> str:
    """Where a person opens the report: under ``base_url`` when reports are served, else a file URI."""
    return f"{base_url.rstrip('/')}/{html.name}" if base_url else html.resolve().as_uri()


def primary_metric(alert: Mapping[str, Any]) -> str:
    """The metric an alert is filed under: its strongest, or the model's name when none is known."""
    return alert["metrics"][0] if alert["metrics"] else alert["model"]


def announced(alert: Mapping[str, Any]) -> bool:
    """Whether a report's alert is news: new, escalated, or resolved (ongoing ones that did not change are not).

    An alert first reported while its series was silenced is never news: not when new, escalated or resolved.
    """
    if alert.get("silenced_until"):
        return False
    return alert["state"] in ("new", "resolved") or bool(alert["escalated_from"])


def alert_event(alert: Mapping[str, Any]) -> str:
    """The event an announced alert is: new, escalated or resolved."""
    return NEW_ALERT if alert["state"] == "new" else RESOLVED_ALERT if alert["state"] == "resolved" else ESCALATED_ALERT


def alert_payload(alert: Mapping[str, Any], link: str) -> dict[str, Any]:
    """The JSON a webhook receives for an announced alert; ``text`` makes it readable in chat tools as is.

    ``key`` is unique per announcement (``<id>:new``, ``<id>:escalated:<severity>``,
    ``<id>:resolved``), so a receiver can de-duplicate repeats of each.
    """
    event, metrics = alert_event(alert), ", ".join(alert["metrics"])
    if event == NEW_ALERT:
        key, text = f"{alert['id']}:new", f"[{alert['severity'].upper()}] anomaly in {metrics} since {_when(alert['start'])}"
    elif event == ESCALATED_ALERT:
        key = f"{alert['id']}:escalated:{alert['severity']}"
        text = f"[{alert['severity'].upper()}] anomaly in {metrics} since {_when(alert['start'])} rose from {alert['escalated_from']}"
    else:
        key, text = f"{alert['id']}:resolved", f"[RESOLVED] anomaly in {metrics} from {_when(alert['start'])} to {_when(alert['end'])}"
    text += f": peak {_ratio(alert)} (model {alert['model']}). Report: {link}"
    return {
        "key": key,
        "event": event,
        "text": text,
        "alert": dict(alert),
        "metric": primary_metric(alert),
        "labels": dict(alert.get("labels") or {}),
        "severity": alert["severity"],
        "score": alert["peak_score"],
        "report": link,
    }


def _prune_runs(space: Workspace, ledger: Ledger, moment: pd.Timestamp) -> None:
    """Delete run records a report has read that are older than :data:`KEEP_RUNS`, and forget their names."""
    for name in sorted(ledger.processed_runs):
        path = space.run_record_path(name)
        if moment - space.run_time(name) > KEEP_RUNS or not path.exists():
            path.unlink(missing_ok=True)
            ledger.processed_runs.discard(name)


def _prune_reports(space: Workspace, moment: pd.Timestamp) -> None:
    """Delete report files older than :data:`KEEP_REPORTS`: a score run every five minutes writes 288 a day."""
    for path, stamp in space.reports():
        if moment - stamp > KEEP_REPORTS:
            path.unlink(missing_ok=True)
