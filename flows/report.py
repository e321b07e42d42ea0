"""Report: one alert report per run, of what is new since the last; a Prefect event per new alert."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from anomaly.reports import Report, headline, write_report
from flows.common import file_link, publish, workspace_path

#: The Prefect event names automations can listen for.
NEW_ALERT, ESCALATED_ALERT = "anomaly.alert.new", "anomaly.alert.escalated"
ALERT_FIELDS = ("state", "severity", "metrics", "start", "end", "peak_ratio", "model")


@task(cache_policy=NO_CACHE)
def report_task(workspace: str, report_url: str | None = None, webhook: str | dict[str, Any] | None = None) -> Report:
    """Write the report files, move the alerts' states, and deliver new alerts to the webhook if one is set."""
    return write_report(workspace, report_url=report_url, webhook=webhook)


@flow(name="report")
def report_flow(workspace: str | None = None, report_url: str | None = None, webhook: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """Report what is new since the last report; a quiet run says "No new anomalies."

    Each new alert (and each ongoing one whose severity rose) is also a
    Prefect event, for automations to route to people. ``webhook`` (a URL
    or ``{"url", "timeout", "retries", "headers"}``) is an optional direct
    JSON POST; an alert it cannot take waits on disk for the next run.
    """
    report = report_task(str(workspace_path(workspace)), report_url, webhook)
    link = report.delivery["link"]
    for alert in report.new_alerts:
        emit_alert(NEW_ALERT, alert, link)
    for alert in report.escalated_alerts:
        emit_alert(ESCALATED_ALERT, alert, link)
    if report.delivery["undelivered"]:
        get_run_logger().warning("%d alert(s) wait for the webhook: %s", report.delivery["undelivered"], webhook)
    create_markdown_artifact(markdown=report.markdown + f"\n[Full report with plots]({link})\n", key="anomaly-report", description="alert report")
    publish(
        "report",
        "Report",
        [f"- {headline(report.document)}", f"- report: `{report.paths['html']}`",
         f"- webhook: {report.delivery['delivered']} delivered, {report.delivery['undelivered']} waiting"],
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
    metric = alert["metrics"][0] if alert["metrics"] else alert["model"]
    emit_event(
        event=name,
        resource={
            "prefect.resource.id": f"anomaly.alert.{alert['id']}",
            "prefect.resource.name": ", ".join(alert["metrics"]) or alert["model"],
            "anomaly.model": alert["model"],
            "anomaly.severity": alert["severity"],
        },
        payload={
            "metric": metric,
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
        },
    )
