"""Score: each group's production model scores the points that arrived since its last run."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from anomaly.jobs import SCORES, STORE, Group, new_events, plan_groups, score_group
from anomaly.store import RawStore
from flows.common import file_link, gather, limit_torch_threads, outcome, publish, registry_root, task_runner, workspace_path

EVENT_FIELDS = ("metric", "start", "end", "severity", "peak_score", "threshold", "model", "version")


@task(cache_policy=NO_CACHE)
def score_one(group: Group, workspace: str, registry: str) -> dict[str, Any]:
    """Score one group's new points and append its scores and events."""
    limit_torch_threads()
    return score_group(group, workspace, registry)


@flow(name="score", task_runner=task_runner())
def score_flow(workspace: str | None = None, registry: str | None = None, groups: dict[str, list[str]] | None = None) -> Any:
    """Score the new points of every group; a group with no production model is reported, not crashed on."""
    root, models = workspace_path(workspace), registry_root(registry)
    planned = plan_groups(RawStore(root / STORE).metrics(), groups)
    futures = score_one.map(planned, str(root), models)
    results, failures = gather([g.name for g in planned], futures)
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
            f"- scored **{sum(r['points'] for r in scored)}** new point(s) in {len(scored)} of {len(planned)} group(s); "
            f"**{len(events)} new event(s)**",
            *[f"- {r['group']}: version {r['version']}, {r['points']} point(s) {r['from']} → {r['to']}, "
              f"{r['events']} event(s)" for r in scored],
            *[f"- {r['group']}: {r['status']}" + (f" ({r['message']})" if "message" in r else "")
              for r in results if r["status"] != "scored"],
            *[f"- **failed** {line}" for line in failures],
        ],
        [{k: str(row[k]) for k in EVENT_FIELDS} for row in events.to_dict("records")],
        file_link(root / SCORES),
        "scores of every group",
    )  # fmt: skip
    return outcome(results, failures, len(planned), "group(s)")

