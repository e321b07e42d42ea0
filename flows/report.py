"""Report: one alert report per run, of what is new since the last; a Prefect event per new, escalated or resolved alert."""

from __future__ import annotations

from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from anomaly.ops.reports import Report, alert_event, headline, primary_metric, write_report
from flows.common import file_link, publish, resolve_secret_blocks, workspace_of

ALERT_FIELDS = ("state", "severity", "metrics", "start", "end", "peak_ratio", "model")


@task(cache_policy=NO_CACHE)
def report_task(
    workspace: str,
    report_url: str | None = None,
    webhook: str | dict[str, Any] | None = None,
    alertmanager: str | dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> Report:
    """Write the report files, announce alerts as Prefect events, move the alerts' states, call the webhook and Alertmanager."""
    return write_report(
        workspace, report_url=report_url, webhook=resolve_webhook(webhook), announce=announce, alertmanager=alertmanager, links=links
    )


def resolve_webhook(webhook: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """The webhook spec with ``url_secret`` (a Prefect Secret block's name) replaced by the URL it holds: a webhook URL is a credential."""
    return resolve_secret_blocks(webhook, {"url_secret": "url"})


def announce(alerts: Sequence[dict[str, Any]], link: str) -> None:
    """A Prefect event per new alert, per ongoing alert whose severity rose, and per resolved alert."""
    for alert in alerts:
        emit_alert(alert_event(alert), alert, link)


@flow(name="report")
def report_flow(
    workspace: str | None = None,
    report_url: str | None = None,
    webhook: str | dict[str, Any] | None = None,
    alertmanager: str | dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Report what is new since the last report; a quiet run says "No new anomalies."

    Each new alert (and each ongoing one whose severity rose, and each one
    resolved) is also a Prefect event (``anomaly.alert.new``, ``.escalated``,
    ``.resolved``), for automations to route to people. ``webhook`` (a URL
    or ``{"url" or "url_secret", "timeout", "retries", "headers"}``, where
    ``url_secret`` names a Prefect Secret block) is an optional direct JSON
    POST; an alert it cannot take waits on disk for the next run, and one it refuses
    for good (a redirect, a 4xx other than 408/429) is parked, logged and named in the
    next report while the others go out. ``alertmanager`` (a URL or
    ``{"url", "timeout", "ends_in", "runbook_url", "dashboard_url"}``, see
    :mod:`anomaly.ops.alertmanager`) gets every open alert, firing, on each
    run, and each resolution; one that is down is logged and tried next run.
    ``links`` (``{"runbook_url", "dashboard_url"}``, templates as Alertmanager
    takes them) puts each alert's runbook and dashboard links in the report
    and in its event's payload.
    """
    report = report_task(str(workspace_of(workspace).root), report_url, webhook, alertmanager, links)
    link = report.delivery["link"]
    manager = report.delivery.get("alertmanager")
    if manager and manager["error"]:
        get_run_logger().warning("%s; the alerts go again with the next report", manager["error"])
    if report.delivery["undelivered"]:
        where = report.delivery["webhook"] or "(none set for this run)"
        get_run_logger().warning("%d alert(s) wait for the webhook %s", report.delivery["undelivered"], where)
    for item in report.delivery.get("rejected", []):
        get_run_logger().warning("the webhook refused alert %s for good (not retried; named in the next report): %s", item["key"], item["reason"])
    create_markdown_artifact(markdown=report.markdown + f"\n[Full report with plots]({link})\n", key="anomaly-report", description="alert report")
    publish(
        "report",
        "Report",
        [f"- {headline(report.document)}", f"- report: `{report.paths['html']}`",
         f"- webhook: {report.delivery['delivered']} delivered, {report.delivery['undelivered']} waiting, "
         f"{report.delivery['parked']} rejected",
         *([f"- alertmanager {manager['where']}: {manager['firing']} firing, {manager['resolved']} resolved"
            + (f", **not delivered**: {manager['error']}" if manager["error"] else "")] if manager else [])],
        [{k: str(a[k]) for k in ALERT_FIELDS} for a in report.document["alerts"]],
        file_link(report.paths["html"]),
        "the HTML report",
    )  # fmt: skip
    return {
        "path": str(report.paths["html"]),
        "paths": {k: str(v) for k, v in report.paths.items()},
        "counts": report.document["counts"],
        "new": len(report.new_alerts),
        "delivery": report.delivery,
    }


def emit_alert(name: str, alert: dict[str, Any], link: str) -> None:
    """One Prefect event for an alert; its resource labels let automations filter by severity or model."""
    emit_event(
        event=name,
        resource={
            "prefect.resource.id": f"anomaly.alert.{alert['id']}",
            "prefect.resource.name": ", ".join(alert["metrics"]) or alert["model"],
            "anomaly.model": alert["model"],
            "anomaly.severity": alert["severity"],
        },
        payload={
            "metric": primary_metric(alert),
            "metrics": alert["metrics"],
            "severity": alert["severity"],
            "score": alert["peak_score"],
            "threshold": alert["threshold"],
            "peak_ratio": alert["peak_ratio"],
            "start": alert["start"],
            "end": alert["end"],
            "model": alert["model"],
            "versions": alert["versions"],
            "report": link,
            "links": alert.get("links", {}),
            "labels": alert.get("labels", {}),
        },
    )
