"""What every flow shares: where things live, the task runner, gathering mapped results, artifacts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from anomaly.ops.registry import resolve_root
from anomaly.ops.workspace import Workspace

#: Tasks that run at once on this machine; torch gets the cores divided among them.
MAX_WORKERS = int(os.environ.get("ANOMALY_MAX_WORKERS", "2"))
#: An existing Dask scheduler (``tcp://host:8786``): when set, mapped tasks run on that cluster.
DASK_ADDRESS_ENV = "ANOMALY_DASK_ADDRESS"


def workspace_of(workspace: str | None) -> Workspace:
    """The parameter, else ``$ANOMALY_WORKSPACE``, else ``data``."""
    return Workspace.resolve(workspace)


def registry_root(registry: str | None) -> str:
    """The registry folder: the parameter, else ``$ANOMALY_REGISTRY``, else ``models``."""
    return str(resolve_root(registry))


def task_runner(address: str | None = None) -> Any:
    """Threads on this machine, or the Dask cluster at ``address`` (default ``$ANOMALY_DASK_ADDRESS``).

    Flows call this when their module is imported, which a deployment's
    worker does for every run, so the variable in the work pool's
    environment decides where a scheduled run's tasks go.
    """
    address = address or os.environ.get(DASK_ADDRESS_ENV)
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=MAX_WORKERS)


def limit_torch_threads() -> None:
    """Give torch its share of the cores, so parallel tasks do not oversubscribe them.

    Called inside each task: on a Dask worker the task runs in another
    process, whose setting is its own.
    """
    share = int(os.environ.get("ANOMALY_TORCH_THREADS", "0")) or max(1, (os.cpu_count() or 1) // MAX_WORKERS)
    if torch.get_num_threads() != share:
        torch.set_num_threads(share)


def gather(names: Sequence[str], futures: Sequence[PrefectFuture]) -> tuple[list[dict[str, Any]], list[str]]:
    """Results of the mapped tasks that completed, and ``"<name>: <why>"`` for each that did not.

    One failed group must not cost the others their results, so failures
    are collected here rather than raised.
    """
    wait(list(futures))
    results, failures = [], []
    for name, future in zip(names, futures):
        state = future.state
        if state.is_completed():
            results.append(future.result())
        else:
            failures.append(f"{name}: {_reason(state)}")
    return results, failures


def _reason(state: State) -> str:
    """The exception a failed task raised, in one line (its state message is generic)."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return state.message or state.name


def outcome(result: Any, failures: Sequence[str], total: int, what: str) -> Any:
    """The flow's return value, or a Failed state naming every group that failed.

    The failed state still carries the results (``state.result(raise_on_failure=False)``):
    the groups that succeeded have written theirs, and the run's artifacts list both.
    """
    if failures:
        return Failed(message=f"{len(failures)} of {total} {what} failed: " + "; ".join(failures), data=result)
    return result


def publish(
    key: str,
    title: str,
    lines: Sequence[str],
    table: list[dict[str, Any]],
    link: str | None = None,
    link_text: str = "",
) -> None:
    """The run's artifacts: a Markdown summary, a table, and a link (keys match ``^[a-z0-9-]*$``)."""
    create_markdown_artifact(markdown="\n".join([f"# {title}", "", *lines, ""]), key=f"{key}-summary", description=title)
    create_table_artifact(table=table, key=f"{key}-table", description=f"{title}: details")
    if link is not None:
        create_link_artifact(link=link, link_text=link_text or link, key=f"{key}-link", description=link_text or title)


def file_link(path: str | Path) -> str:
    """A ``file://`` URL for a local path, for link artifacts."""
    return Path(path).resolve().as_uri()


def resolve_secret_blocks(spec: Any, keys: dict[str, str]) -> Any:
    """``spec`` with each ``<key>`` naming a Prefect Secret block replaced by ``keys[key]: <its value>``.

    A credential passed as a flow parameter is stored and shown with the run,
    so a parameter names the block instead and the value is looked up inside
    the task, where it only lives in the object that uses it. Anything but a
    dict holding one of ``keys`` comes back as it is.
    """
    if not isinstance(spec, dict) or not any(k in spec for k in keys):
        return spec
    from prefect.blocks.system import Secret

    resolved = dict(spec)
    for key, target in keys.items():
        if key in resolved:
            resolved[target] = Secret.load(resolved.pop(key)).get()
    return resolved
