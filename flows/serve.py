"""Serve the deployments of ``prefect.yaml`` from one process, without a work pool.

``python -m flows.serve`` reads the same file ``prefect deploy --all`` reads,
so the two ways of scheduling run the same flows with the same parameters and
schedules. It needs a running server (``PREFECT_API_URL``): schedules never
fire in ephemeral mode.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from anomaly.errors import ConfigError

PROJECT_FILE = Path(__file__).resolve().parent.parent / "prefect.yaml"


def read_deployments(path: str | Path = PROJECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments:`` entries of a ``prefect.yaml``."""
    try:
        project = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from exc
    deployments = (project or {}).get("deployments")
    if not isinstance(deployments, list) or not deployments:
        raise ConfigError(f"{str(path)!r} declares no deployments")
    return deployments


def load_flow(entrypoint: str) -> Flow:
    """The flow object an entrypoint like ``flows/score.py:score_flow`` names."""
    file, _, attribute = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    found = getattr(module, attribute, None)
    if not isinstance(found, Flow):
        raise ConfigError(f"entrypoint {entrypoint!r} does not name a Prefect flow")
    return found


def schedules(spec: dict[str, Any], interval: float | None = None) -> list[Schedule]:
    """The entry's schedules as Prefect objects; ``interval`` (seconds) replaces them, for trials."""
    if interval is not None:
        return [Interval(interval)]
    built = []
    for item in spec.get("schedules") or []:
        if "cron" in item:
            built.append(Cron(item["cron"], timezone=item.get("timezone", "UTC")))
        elif "interval" in item:
            built.append(Interval(item["interval"], timezone=item.get("timezone", "UTC")))
        else:
            raise ConfigError(f"deployment {spec.get('name')!r}: unsupported schedule {item!r}")
    return built


def to_deployment(spec: dict[str, Any], interval: float | None = None) -> RunnerDeployment:
    """One ``prefect.yaml`` entry as a deployment that ``serve`` can run."""
    return load_flow(spec["entrypoint"]).to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        parameters=spec.get("parameters") or {},
        schedules=schedules(spec, interval),
        concurrency_limit=spec.get("concurrency_limit"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=str(PROJECT_FILE), help="the project file (default: prefect.yaml)")
    parser.add_argument("--only", action="append", metavar="NAME", help="serve only this deployment (repeatable)")
    parser.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS instead of the file's schedules")
    args = parser.parse_args(argv)
    try:
        specs = [d for d in read_deployments(args.file) if not args.only or d["name"] in args.only]
        if not specs:
            raise ConfigError(f"no deployment named {args.only} in {args.file}")
        deployments = [to_deployment(spec, args.interval) for spec in specs]
    except ConfigError as exc:
        parser.error(str(exc))
    serve(*deployments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
