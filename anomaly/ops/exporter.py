"""Scores as Prometheus metrics: a ``/metrics`` endpoint, or a push to a Pushgateway.

Per series (labels ``metric``, ``model``, ``version``, see
:data:`anomaly.ops.latest.SERIES_LABELS`, plus the series' own labels from
the store's series catalogue, renamed ``exported_<name>`` where they would
clash, see :meth:`~anomaly.ops.latest.SeriesPoint.labels`), the values of
its latest scored point (:mod:`anomaly.ops.latest`):

- ``anomaly_score`` and ``anomaly_threshold``: the metric's own score and threshold;
- ``anomaly_expected``: the model's reconstruction, in the metric's units;
- ``anomaly_expected_lower`` / ``anomaly_expected_upper``: expected ∓ the band
  (the expected range alerts are gated on, ``events.band``, in the metric's units);
- ``anomaly_observed``: the value the score run saw;
- ``anomaly_alert_active``: 1 while an alert of the series is open in the report ledger, else 0;
- ``anomaly_scored_timestamp_seconds``: when that point was, to see staleness.

The text is written by ``prometheus_client`` from a collector that reads the
workspace at each scrape, so a long-running server always shows what the
latest score run and report left, and a push sends the same families.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping
from wsgiref.simple_server import WSGIServer

import pandas as pd
from prometheus_client import push_to_gateway, start_http_server
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from anomaly.errors import ConfigError, DataError, excerpt
from anomaly.io.catalogue import Series, series_of
from anomaly.ops.alerts import Ledger
from anomaly.ops.endpoints import check_timeout, check_url, where
from anomaly.ops.latest import SeriesPoint, read_latest
from anomaly.ops.reports import load_ledger
from anomaly.ops.workspace import Workspace

log = logging.getLogger(__name__)

#: Family name -> help text, in the order they are written.
FAMILIES: dict[str, str] = {
    "anomaly_score": "Latest anomaly score of the series (its own score, in the baseline's standard deviations).",
    "anomaly_threshold": "Threshold the series' score is flagged above.",
    "anomaly_expected": "What the model expected: its reconstruction of the latest point, in the metric's units.",
    "anomaly_expected_lower": "Expected value minus the band (the expected range: events.band quantile of training errors).",
    "anomaly_expected_upper": "Expected value plus the band (the expected range: events.band quantile of training errors).",
    "anomaly_observed": "The latest scored value of the series, in the metric's units.",
    "anomaly_alert_active": "1 while an alert of the series is open in the report ledger, else 0.",
    "anomaly_scored_timestamp_seconds": "Time of the latest scored point (Unix seconds).",
}
#: Seconds a push may take before it is abandoned (default 10), and the most a setting may ask for.
PUSH_TIMEOUT_S, MAX_PUSH_TIMEOUT_S = 10.0, 300.0
_JOB = re.compile(r"[A-Za-z0-9_.:-]+")


def open_alert_series(ledger: Ledger) -> set[tuple[str, str]]:
    """``(model, metric)`` of every series an open alert of the ledger names."""
    return {(a.model, m) for a in ledger.alerts.values() if a.open for m in (a.metrics or [a.model])}


def families(points: Iterable[SeriesPoint], active: set[tuple[str, str]], catalogue: Mapping[str, Series] | None = None) -> list[Metric]:
    """The gauge families of ``points``; a value that is not known (no band, not yet scored) is left out, not faked.

    ``catalogue`` (the store's series catalogue) adds each series' own labels.
    """
    out = {name: Metric(name, text, "gauge") for name, text in FAMILIES.items()}
    for p in points:
        labels = p.labels(series_of(catalogue or {}, p.metric).labels)
        values = {
            "anomaly_score": p.score,
            "anomaly_threshold": p.threshold,
            "anomaly_expected": p.expected,
            "anomaly_expected_lower": p.lower,
            "anomaly_expected_upper": p.upper,
            "anomaly_observed": p.value,
            "anomaly_alert_active": 1.0 if (p.model, p.metric) in active else 0.0,
            "anomaly_scored_timestamp_seconds": _epoch(p.timestamp),
        }
        for name, value in values.items():
            if value is not None:
                out[name].add_sample(name, labels, value)
    return list(out.values())


def _epoch(iso: str) -> float:
    return float(pd.Timestamp(iso).timestamp())


class WorkspaceCollector(Collector):
    """Reads the workspace's latest points and open alerts at each collection (scrape or push)."""

    def __init__(self, workspace: str | Path) -> None:
        self.space = Workspace(workspace)

    def collect(self) -> Iterable[Metric]:
        try:
            active = open_alert_series(load_ledger(self.space.ledger_path))
        except DataError as exc:  # the scores are still worth showing; the damage is named in the log
            log.warning("anomaly_alert_active left at 0: %s", exc)
            active = set()
        try:
            catalogue = self.space.store().series()
        except DataError as exc:  # the scores without the series' own labels, rather than none at all
            log.warning("series exported without their source labels: %s", exc)
            catalogue = {}
        return families(read_latest(self.space), active, catalogue)


def workspace_registry(workspace: str | Path) -> CollectorRegistry:
    """A registry holding only the workspace's families (no process metrics: they would mislead on a push)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkspaceCollector(workspace))
    return registry


def exposition(workspace: str | Path) -> str:
    """The workspace's metrics in Prometheus' text format, as ``/metrics`` serves them."""
    return generate_latest(workspace_registry(workspace)).decode("utf-8")


# -- a /metrics endpoint ----------------------------------------------------------------------


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint: where it listens, and how to stop it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def serve_metrics(workspace: str | Path, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve the workspace's metrics on ``http://host:port/metrics`` from a background thread.

    A port that cannot be bound is a :class:`ConfigError` naming the address.
    """
    if not Workspace(workspace).root.is_dir():
        raise ConfigError(f"workspace {excerpt(str(workspace), 200)} is not a folder")
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"port must be an integer from 0 to 65535, got {excerpt(port)}")
    try:
        server, thread = start_http_server(port, addr=host, registry=workspace_registry(workspace))
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    return MetricsServer(server, thread)


# -- a push to a Pushgateway ------------------------------------------------------------------


@dataclass(frozen=True)
class Pushgateway:
    """Where to push: the gateway's base URL, the ``job`` its group is filed under, a timeout per push."""

    url: str
    job: str = "anomaly"
    timeout: float = PUSH_TIMEOUT_S

    def __post_init__(self) -> None:
        check_url("pushgateway", self.url)
        if not (isinstance(self.job, str) and _JOB.fullmatch(self.job)):
            raise ConfigError(f"pushgateway job must be letters, digits, '_', '.', ':' or '-', got {excerpt(self.job)}")
        check_timeout("pushgateway", self.timeout, MAX_PUSH_TIMEOUT_S)

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, Any] | Pushgateway | None) -> Pushgateway | None:
        """A URL, or ``{"url": ..., "job": ..., "timeout": ...}`` as flows and YAML carry it."""
        if spec is None or isinstance(spec, Pushgateway):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"pushgateway must be a URL or a mapping, got a {type(spec).__name__}")
        unknown = set(spec) - {"url", "job", "timeout"}
        if unknown or "url" not in spec:
            raise ConfigError(f"pushgateway needs a url and takes job, timeout; got keys {excerpt(sorted(map(str, spec)), 200)}")
        return cls(str(spec["url"]), spec.get("job", "anomaly"), spec.get("timeout", PUSH_TIMEOUT_S))

    def where(self) -> str:
        return where(self.url)


def push_metrics(workspace: str | Path, gateway: Pushgateway | str | Mapping[str, Any]) -> dict[str, Any]:
    """Replace the job's group on the Pushgateway with the workspace's metrics (HTTP PUT).

    Never raises for the gateway's sake: ``error`` is ``None`` when it took
    them, else one line naming the gateway and why (unreachable, timed out,
    refused). The scores are on disk either way, and the next push sends
    the latest state again.
    """
    target = Pushgateway.from_spec(gateway)
    if target is None:
        raise ConfigError("pushgateway is not set: give a URL or {url, job, timeout}")
    registry = workspace_registry(workspace)
    series = len({tuple(sorted(s.labels.items())) for family in registry.collect() for s in family.samples})
    try:
        push_to_gateway(target.url, job=target.job, registry=registry, timeout=target.timeout)
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace") if exc.fp else ""
        error = f"pushgateway {target.where()} refused the push: HTTP {exc.code} {' '.join(body.split())[:200]}".rstrip()
    except (OSError, ValueError) as exc:  # URLError, refused, timed out
        reason = getattr(exc, "reason", exc)
        error = f"pushgateway {target.where()} unreachable: {type(reason).__name__}: {reason}"
    else:
        return {"pushed": series, "error": None, "where": target.where(), "job": target.job}
    log.warning("%s (the scores are kept; the next push sends the latest again)", error)
    return {"pushed": 0, "error": error, "where": target.where(), "job": target.job}
