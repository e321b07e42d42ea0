"""Train: one model per group on recent history, published to the registry, promoted when earned."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from anomaly.core.config import DetectorConfig
from anomaly.io.store import RawStore
from anomaly.ops.jobs import Group, plan_store_groups, train_group
from flows.common import (
    file_link,
    gather,
    limit_torch_threads,
    outcome,
    publish,
    registry_root,
    task_runner,
    workspace_of,
)


@task(cache_policy=NO_CACHE)
def train_one(
    group: Group, workspace: str, registry: str, config_path: str | None, history: str, validation: str, run_id: str
) -> dict[str, Any]:
    """Fit, publish and maybe promote one group's model."""
    limit_torch_threads()
    config = DetectorConfig.from_file(config_path) if config_path else None
    return train_group(group, workspace, registry, config, history=history, validation=validation, run_id=run_id)


@task(cache_policy=NO_CACHE)
def compact_store(store_root: str) -> dict[str, int]:
    """Merge the raw store's closed days into one file per metric, so training reads few files."""
    return RawStore(store_root).compact()


@flow(name="train", task_runner=task_runner())
def train_flow(
    workspace: str | None = None,
    registry: str | None = None,
    groups: dict[str, Any] | None = None,
    config_path: str | None = None,
    history: str = "14D",
    validation: str = "1D",
) -> Any:
    """Train every group in parallel: one model per metric unless ``groups`` names metrics to model together.

    A group is a list of metrics or a label selector over the series'
    labels, e.g. ``{"checkout": {"match": {"job": "checkout"}}}``.

    The raw store's closed days are compacted first. Each group is fitted
    on the ``history`` before its newest ``validation``
    slice and promoted to production when it is the first model or is not
    worse than production on that slice. A group that fails fails its own
    task; the others finish, and the run ends Failed naming the ones that failed.
    """
    space, models = workspace_of(workspace), registry_root(registry)
    compacted = compact_store(str(space.store_root))
    planned = plan_store_groups(space.store(), groups)
    run_id = str(flow_run.id or "")
    futures = train_one.map(planned, str(space.root), models, config_path, history, validation, run_id)
    done, failures = gather([g.name for g in planned], futures)
    logger = get_run_logger()
    for line in failures:
        logger.error("training failed for %s", line)
    publish(
        "train",
        "Train",
        [
            f"- registry: `{models}`",
            f"- raw store: {compacted['files_replaced']} part file(s) of closed days merged into {compacted['partitions']}",
            f"- trained {len(done)} of {len(planned)} group(s); promoted {sum(r['promoted'] for r in done)}",
            *[f"- {r['group']} version {r['version']}: {r['reason']}"
              + (f"; {r['excluded_points']} point(s) of marked alerts left out" if r.get("excluded_points") else "") for r in done],
            *[f"- **failed** {line}" for line in failures],
        ],
        [{k: r[k] for k in ("group", "version", "promoted", "holdout_error", "train_points", "epochs", "reason")} for r in done],
        file_link(done[0]["path"] if len(done) == 1 else models),
        "the registry version" if len(done) == 1 else "the registry",
    )
    return outcome(done, failures, len(planned), "group(s)")
