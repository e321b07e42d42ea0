"""Ingest: pull new points from a source into the workspace's raw store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from anomaly.io.sources import build_source, ingest
from anomaly.io.store import RawStore
from flows.common import file_link, publish, resolve_secret_blocks, workspace_of

SourceSpec = str | list[str] | dict[str, Any]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O errors (an unreachable share, a timeout); bad data or configuration fails at once."""
    return isinstance(state.result(raise_on_failure=False), OSError)


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_transient,
    cache_policy=NO_CACHE,
)
def pull(source: SourceSpec, store_root: str) -> dict[str, Any]:
    """Fetch what the source has after the store's watermarks and append it as one atomic batch."""
    built = build_source(resolve_secrets(source))
    return {**ingest(built, RawStore(store_root)).as_dict(), "source": repr(built)}


#: ``<key>_secret: <Prefect Secret block name>`` in a source spec becomes ``<key>: <its value>``.
SECRET_KEYS = {"password_secret": "password", "token_secret": "token"}


def resolve_secrets(source: SourceSpec) -> SourceSpec:
    """Credentials from Prefect Secret blocks; the value only ever lives in the source object, whose repr hides it."""
    return resolve_secret_blocks(source, SECRET_KEYS)


@flow(name="ingest")
def ingest_flow(source: SourceSpec, workspace: str | None = None) -> dict[str, Any]:
    """Append new points from a source to the raw store; nothing new is a quiet, normal run.

    ``source`` is a path, a list of paths (CSV/Parquet files, folders, globs
    or fsspec URLs, wide or long) or a mapping with a ``kind``. A run that
    fails after its retries leaves the store as it was; a re-run or an
    overlapping pull adds nothing twice. Points far from the clock are
    quarantined, not stored (:class:`anomaly.io.store.TimeLimits`); the run
    warns and its summary counts them.
    """
    store_root = workspace_of(workspace).store_root
    result = pull(source, str(store_root))
    logger = get_run_logger()
    logger.info(
        "ingested %d new point(s) in %d metric(s); %d duplicate(s) dropped",
        result["rows_written"], len(result["rows_by_metric"]), result["duplicates_dropped"],
    )  # fmt: skip
    if result["quarantined"]:
        logger.warning(
            "%d point(s) far from the clock were quarantined, not stored: 'anomaly store quarantine %s' lists them",
            result["quarantined"], store_root,
        )  # fmt: skip
    rows = [
        {"metric": m, "new_points": n, "watermark": result["watermarks"].get(m)}
        for m, n in result["rows_by_metric"].items()
    ]
    publish(
        "ingest",
        "Ingest",
        [
            f"- source: `{result['source']}`",
            f"- new points: **{result['rows_written']}** in {len(rows)} metric(s)",
            f"- duplicates dropped: {result['duplicates_dropped']}; empty readings dropped: {result['missing_dropped']}",
            f"- quarantined (far from the clock, not stored): {result['quarantined']}",
        ],
        rows,
        file_link(store_root),
        "the raw store",
    )
    return result
