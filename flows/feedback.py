"""Feedback: mark an alert confirmed, false-positive or expected, as ``anomaly alerts mark`` does."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from anomaly.ops.marks import mark_alert
from flows.common import workspace_of


@task(cache_policy=NO_CACHE)
def mark_task(workspace: str, alert: str, mark: str, note: str, silence: str | None, by: str | None) -> dict[str, Any]:
    """Record one mark in the workspace's marks file; returns the record."""
    return mark_alert(workspace, alert, mark, note=note, silence=silence, by=by).to_json()


@flow(name="feedback")
def feedback_flow(
    alert: str,
    mark: str,
    note: str = "",
    silence: str | None = None,
    by: str | None = None,
    workspace: str | None = None,
) -> dict[str, Any]:
    """Mark alert ``alert`` (its id in the report) ``confirmed``, ``false-positive`` or ``expected``.

    False-positive and expected alerts are kept out of their model's next
    training; ``silence`` (``6h``, ``2d``) keeps new alerts of the same series
    from being announced for that long. ``by`` defaults to the worker's $USER.
    """
    record = mark_task(str(workspace_of(workspace).root), alert, mark, note, silence, by)
    get_run_logger().info("alert %s (%s): %s by %s", record["alert"], record["model"], record["mark"], record["by"])
    return record
