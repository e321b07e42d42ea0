"""Report: the events written since the last report, as an alert report."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from anomaly.jobs import write_report
from flows.common import file_link, publish, workspace_path


@task(cache_policy=NO_CACHE)
def report_task(workspace: str) -> dict[str, Any]:
    """Write the report file and remember which events it covered."""
    return write_report(workspace)


@flow(name="report")
def report_flow(workspace: str | None = None) -> dict[str, Any]:
    """One report per run, of the events no earlier report covered; a quiet run says "No new anomalies."."""
    result = report_task(str(workspace_path(workspace)))
    create_markdown_artifact(markdown=result["markdown"], key="anomaly-report", description="alert report")
    publish(
        "report",
        "Report",
        [f"- **{result['events']} new event(s)**", f"- report: `{result['path']}`"],
        result["table"],
        file_link(result["path"]),
        "the report file",
    )
    return {k: v for k, v in result.items() if k not in ("markdown", "table")}
