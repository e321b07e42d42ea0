"""Score: each group's production model scores the points that arrived since its last run."""

from __future__ import annotations

import math
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed

from anomaly.errors import ConfigError
from anomaly.ops.exporter import push_metrics
from anomaly.ops.jobs import Group, new_events, plan_store_groups, score_groups
from flows.common import (
    file_link,
    limit_torch_threads,
    outcome,
    publish,
    registry_root,
    task_runner,
    workspace_of,
)
from flows.report import report_flow

EVENT_FIELDS = ("metric", "start", "end", "severity", "peak_score", "threshold", "model", "version")


#: Up to this many groups get a task each; beyond it, groups are batched so there are about this many tasks.
MAX_TASKS = 64


@task(cache_policy=NO_CACHE)
def score_batch(groups: list[Group], workspace: str, registry: str, policy: dict[str, dict[str, Any]] | None = None) -> Any:
    """Score a batch of groups; the task fails, naming them, when any of its groups failed.

    The other groups of the batch are scored and written all the same, and
    their results travel with the failed state.
    """
    limit_torch_threads()
    results = score_groups(groups, workspace, registry, policy=policy)
    failed = [f"{r['group']}: {r['message']}" for r in results if r["status"] == "failed"]
    return Failed(message="; ".join(failed), data=results) if failed else results


def batches(groups: list[Group], max_tasks: int = MAX_TASKS) -> list[list[Group]]:
    """One group per task while there are few; about ``max_tasks`` even batches when there are many."""
    size = max(1, math.ceil(len(groups) / max_tasks))
    return [groups[i : i + size] for i in range(0, len(groups), size)]


@flow(name="score", task_runner=task_runner())
def score_flow(
    workspace: str | None = None,
    registry: str | None = None,
    groups: dict[str, Any] | None = None,
    report: bool = True,
    report_url: str | None = None,
    webhook: str | dict[str, Any] | None = None,
    policy: dict[str, dict[str, Any]] | None = None,
    alertmanager: str | dict[str, Any] | None = None,
    pushgateway: str | dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> Any:
    """Score the new points of every group, then report; a group with no production model is reported, not crashed on.

    Each model scores under its registry policy (``anomaly models policy``);
    ``policy`` (``{section: {setting: value}}``, e.g. ``{"threshold": {"k": 6}}``)
    changes it for this deployment, without retraining.

    Each group runs in a task of its own up to 64 groups; beyond that,
    groups are batched into about 64 tasks, since orchestrating a task
    costs more than scoring one metric's new points. Either way a failed
    group fails its task and the run, and only its own results are missing.
    With ``report`` (the default) the run ends with the report flow, so a
    new alert goes out within one score run of its data arriving; a failed
    report fails the run too, since an alert not reported is the one failure
    that must not pass quietly. ``webhook``, ``alertmanager`` and ``links``
    go to the report (see the report flow).

    ``pushgateway`` (a URL or ``{"url", "job", "timeout"}``) receives every
    series' latest score, threshold, expected value and band, and whether
    an alert of it is open, at the end of the run. A push that fails fails
    the run with the reason, after the scores and the report are written:
    the next run pushes the latest state again.
    """
    space, models = workspace_of(workspace), registry_root(registry)
    planned = batches(plan_store_groups(space.store(), groups))
    futures = score_batch.map(planned, str(space.root), models, unmapped(policy))
    wait(futures)
    results = [r for batch, future in zip(planned, futures) for r in _batch_results(batch, future)]
    failures = [f"{r['group']}: {r['message']}" for r in results if r["status"] == "failed"]
    logger = get_run_logger()
    for r in results:
        if r["status"] == "no-model":
            logger.warning("not scored: %s", r["message"])
    for line in failures:
        logger.error("scoring failed for %s", line)
    scored = [r for r in results if r["status"] == "scored"]
    events = new_events(results)
    publish(
        "score",
        "Score",
        [
            f"- scored **{sum(r['points'] for r in scored)}** new point(s) in {len(scored)} of {len(results)} group(s); "
            f"**{len(events)} new event(s)**",
            *[f"- {r['group']}: version {r['version']}, {r['points']} point(s) {r['from']} → {r['to']}, "
              f"{r['events']} event(s)" for r in scored],
            *[f"- {r['group']}: {r['status']}" + (f" ({r['message']})" if "message" in r else "")
              for r in results if r["status"] != "scored"],
            *[f"- **failed** {line}" for line in failures],
        ],
        [{k: str(row[k]) for k in EVENT_FIELDS} for row in events.to_dict("records")],
        file_link(space.root / "scores"),
        "scores of every group",
    )  # fmt: skip
    if report:
        reported = report_flow(str(space.root), report_url, webhook, alertmanager, links, return_state=True)
        if not reported.is_completed():
            failures.append(f"report: {reported.message}")
    if pushgateway is not None:
        pushed = push_task(str(space.root), pushgateway)
        if pushed["error"]:
            logger.error("%s", pushed["error"])
            failures.append(pushed["error"])
        else:
            logger.info("pushed %d series to %s (job %s)", pushed["pushed"], pushed["where"], pushed["job"])
    return outcome(results, failures, len(results), "group(s)")


@task(cache_policy=NO_CACHE)
def push_task(workspace: str, pushgateway: str | dict[str, Any]) -> dict[str, Any]:
    """Push the workspace's series metrics to the Pushgateway; the outcome, error included, is returned, not raised.

    A bad setting is an error like an unreachable gateway: the scores and the report are already written.
    """
    try:
        return push_metrics(workspace, pushgateway)
    except ConfigError as exc:
        return {"pushed": 0, "error": f"pushgateway setting refused: {exc}", "where": None, "job": None}


def _batch_results(batch: list[Group], future: PrefectFuture) -> list[dict[str, Any]]:
    """A batch's per-group results, also from a failed batch; a batch that crashed fails all its groups."""
    data = future.state.result(raise_on_failure=False)
    if isinstance(data, list):
        return data
    why = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else str(future.state.message)
    return [{"group": name, "status": "failed", "message": why} for name in (g.name for g in batch)]

