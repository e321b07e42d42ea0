"""Scores as Prometheus metrics: the latest point per series, a /metrics endpoint, a Pushgateway push.

A tiny two-metric model is trained once and scores data with an incident in
progress, so one series has an open alert. The exposition is checked value
by value against the workspace; then a real Prometheus on loopback scrapes
``anomaly serve-metrics`` and a real Pushgateway (``honor_labels``) that the
library pushed to, and PromQL through Prometheus' HTTP API returns the band.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from anomaly.errors import ConfigError
from anomaly.evaluation.synthetic import clean_metrics, inject
from anomaly.io.store import RawStore
from anomaly.ops.exporter import FAMILIES, Pushgateway, exposition, push_metrics, serve_metrics
from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.latest import BAND_QUANTILE, SeriesPoint, expected_band, read_latest
from anomaly.ops.registry import ModelRegistry
from anomaly.ops.reports import write_report
from anomaly.ops.workspace import STORE, Workspace
from tests import servers
from tests.conftest import CHILD_ENV, REPO, TINY, long_points

GROUPS = {"host": ["cpu", "requests"]}
T0 = pd.Timestamp("2026-02-01 00:00", tz="UTC")


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace whose second score run is inside an incident of ``requests``, reported: an open alert."""
    root = tmp_path_factory.mktemp("outputs")
    workspace, registry = root / "ws", root / "models"
    series = clean_metrics(1440, metrics=("requests", "cpu"), seed=11)
    data, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    store = RawStore(workspace / STORE)
    store.append(long_points(data.iloc[:864]))
    groups = plan_groups(["cpu", "requests"], GROUPS)
    train_group(groups[0], workspace, registry, TINY, history="3D", validation="12h")
    score_groups(groups, workspace, registry)
    store.append(long_points(data.iloc[864:930]))
    score_groups(groups, workspace, registry)
    report = write_report(workspace, now=T0)
    return {"workspace": workspace, "registry": registry, "data": data, "report": report}


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of an exposition, read back with prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def key(point: SeriesPoint) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(point.labels().items()))


# -- the latest point and its band ---------------------------------------------------------


def test_the_band_is_the_expected_range_alerts_are_gated_on_in_the_metrics_units(scored: dict[str, Any]) -> None:
    detector = ModelRegistry(scored["registry"]).load("host").detector
    band, ranges = expected_band(detector), detector.expected_ranges(detector.policy.events.band or BAND_QUANTILE)
    assert ranges is not None
    assert band == pytest.approx({m: r * abs(s) for m, r, s in zip(detector.metrics_, ranges, detector.scaler_.scale_)}, rel=1e-12)
    assert expected_band(detector.with_policy(detector.policy.replace(events={"band": None}))) == pytest.approx(band)  # gate off: still drawn
    wider = expected_band(detector.with_policy(detector.policy.replace(events={"band": 0.999})))
    assert all(wider[m] > band[m] > 0 for m in band)
    old = copy.copy(detector)
    old.residuals_ = None  # a 0.1.0 version: no band, not a made-up one
    assert expected_band(old) == {}


def test_each_series_latest_point_is_the_last_scored_row_with_the_versions_band(scored: dict[str, Any]) -> None:
    space = Workspace(scored["workspace"])
    points = {p.metric: p for p in read_latest(space)}
    assert sorted(points) == ["cpu", "requests"]
    last = scored["data"].index[929]
    parts = sorted(space.scores_dir("host").glob("part-*.parquet"))
    row = pd.read_parquet(parts[-1]).set_index("timestamp").iloc[-1]
    detector = ModelRegistry(scored["registry"]).load("host").detector
    band = expected_band(detector)
    for metric, p in points.items():
        assert (p.model, p.version, pd.Timestamp(p.timestamp)) == ("host", "000001", last)
        assert p.value == row[metric] and p.expected == row[f"reconstruction_{metric}"] and p.score == row[f"score_{metric}"]
        assert p.threshold == detector.thresholds_.per_metric[metric].threshold_
        assert p.band == band[metric] > 0 and p.lower == p.expected - p.band and p.upper == p.expected + p.band
    assert points["requests"].flag and points["requests"].score > points["requests"].threshold  # inside the incident


def test_the_exposition_carries_every_family_per_series_with_the_alert_state(scored: dict[str, Any]) -> None:
    space = Workspace(scored["workspace"])
    points = {p.metric: p for p in read_latest(space)}
    text = exposition(space.root)
    assert all(f"# TYPE {name} gauge" in text for name in FAMILIES)
    samples = parsed(text)
    assert len(samples) == len(FAMILIES) * 2  # two series, every value known
    (alert,) = [a for a in scored["report"].document["alerts"] if a["open"]]
    assert alert["metrics"][0] == "requests"
    for metric, p in points.items():
        labels = key(p)
        assert dict(labels) == {"metric": metric, "model": "host", "version": "000001"}
        assert samples[("anomaly_score", labels)] == p.score and samples[("anomaly_threshold", labels)] == p.threshold
        assert samples[("anomaly_expected", labels)] == p.expected and samples[("anomaly_observed", labels)] == p.value
        assert samples[("anomaly_expected_lower", labels)] == p.lower and samples[("anomaly_expected_upper", labels)] == p.upper
        assert samples[("anomaly_scored_timestamp_seconds", labels)] == pd.Timestamp(p.timestamp).timestamp()
        assert samples[("anomaly_alert_active", labels)] == (1.0 if metric in alert["metrics"] else 0.0)
    assert samples[("anomaly_alert_active", key(points["requests"]))] == 1.0


def test_a_damaged_latest_file_is_skipped_and_the_other_groups_still_exported(scored: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    space = Workspace(tmp_path / "ws")
    good = space.latest_path("host")
    good.parent.mkdir(parents=True)
    good.write_text(scored["workspace"].joinpath("scores", "host", "latest.json").read_text())
    broken = space.latest_path("disk")
    broken.parent.mkdir(parents=True)
    broken.write_text('{"series": [{"metric": "disk"')
    with caplog.at_level(logging.WARNING, logger="anomaly.ops.latest"):
        samples = parsed(exposition(space.root))
    assert {dict(labels)["metric"] for _, labels in samples} == {"cpu", "requests"}
    assert any(str(broken) in r.getMessage() for r in caplog.records)
    # no ledger yet: no alert is active
    assert {v for (name, _), v in samples.items() if name == "anomaly_alert_active"} == {0.0}


def copied_workspace(scored: dict[str, Any], root: Path) -> Workspace:
    """A workspace holding only the scored one's latest points (and, so far, no series catalogue)."""
    space = Workspace(root)
    space.latest_path("host").parent.mkdir(parents=True)
    space.latest_path("host").write_text(scored["workspace"].joinpath("scores", "host", "latest.json").read_text())
    return space


def test_samples_carry_the_series_own_labels_and_ours_are_never_clobbered(scored: dict[str, Any], tmp_path: Path) -> None:
    space = copied_workspace(scored, tmp_path / "ws")
    space.store_root.mkdir(parents=True)
    catalogue = {
        "format_version": 1,
        "series": {
            "requests": {"name": "http_requests", "labels": {"team": "checkout", "model": "theirs", "exported_model": "x",
                                                               "metric": "m", "version": "v9", "job": "api", "__meta": "drop"}},
        },
    }  # fmt: skip
    space.store().catalogue_path.write_text(json.dumps(catalogue))
    labelsets = {dict(labels)["metric"]: dict(labels) for (name, labels) in parsed(exposition(space.root)) if name == "anomaly_score"}
    assert labelsets["requests"] == {
        "metric": "requests", "model": "host", "version": "000001",  # ours, whatever the source says
        "team": "checkout", "exported_model": "x", "exported_exported_model": "theirs", "exported_metric": "m",
        "exported_version": "v9", "exported_job": "api",  # as Prometheus renames a target's job on a scrape
    }  # fmt: skip
    assert labelsets["cpu"] == {"metric": "cpu", "model": "host", "version": "000001"}, "a series without an entry: no labels"


def test_a_damaged_catalogue_exports_without_source_labels_and_names_the_file(
    scored: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    space = copied_workspace(scored, tmp_path / "ws")
    space.store_root.mkdir(parents=True)
    space.store().catalogue_path.write_text('{"format_version": 1, "series": [')
    with caplog.at_level(logging.WARNING, logger="anomaly.ops.exporter"):
        samples = parsed(exposition(space.root))
    assert {tuple(sorted(dict(labels))) for _, labels in samples} == {("metric", "model", "version")}
    assert any("series.json" in r.getMessage() and "without their source labels" in r.getMessage() for r in caplog.records)
    assert space.store().catalogue_path.read_text() == '{"format_version": 1, "series": [', "left as it was"


# -- bad settings and servers that are not there --------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://gw:9091", "pushgateway url must be http(s)://host[:port], got 'ftp://gw:9091'"),
        ("http://gw:port", "pushgateway url has a bad port: 'http://gw:port'"),
        ({"url": "http://gw", "job": "a/b"}, "pushgateway job must be letters, digits, '_', '.', ':' or '-', got 'a/b'"),
        ({"url": "http://gw", "timeout": 0}, "pushgateway timeout must be > 0 and at most 300 seconds, got 0"),
        ({"address": "http://gw"}, "pushgateway needs a url and takes job, timeout; got keys ['address']"),
    ],
)
def test_a_bad_pushgateway_setting_is_refused_by_name(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Pushgateway.from_spec(spec)
    assert str(refused.value) == message


def test_a_push_to_a_gateway_that_is_down_is_one_line_in_bounded_time_and_keeps_the_scores(scored: dict[str, Any]) -> None:
    port = servers.free_port()  # nothing listens there
    before = sorted(p.read_bytes() for p in scored["workspace"].rglob("*.json"))
    started = time.monotonic()
    outcome = push_metrics(scored["workspace"], {"url": f"http://127.0.0.1:{port}", "timeout": 2})
    assert time.monotonic() - started < 5
    assert outcome["pushed"] == 0 and outcome["error"].startswith(f"pushgateway http://127.0.0.1:{port} unreachable: ")
    assert "\n" not in outcome["error"] and "refused" in outcome["error"].lower()
    assert sorted(p.read_bytes() for p in scored["workspace"].rglob("*.json")) == before


def test_a_pushgateway_that_answers_slowly_is_abandoned_after_its_timeout(scored: dict[str, Any]) -> None:
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        outcome = push_metrics(scored["workspace"], {"url": f"http://127.0.0.1:{silent.getsockname()[1]}", "timeout": 1})
    assert time.monotonic() - started < 4
    assert "unreachable" in outcome["error"] and "timed out" in outcome["error"]


def test_serving_on_a_port_in_use_or_a_missing_workspace_is_refused_by_name(scored: dict[str, Any], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            serve_metrics(scored["workspace"], port)
    done = subprocess.run(
        [sys.executable, "-m", "anomaly.cli", "serve-metrics", "--workspace", str(tmp_path / "nowhere"), "--port", "0"],
        cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip() == f"error: workspace '{tmp_path / 'nowhere'}' is not a folder"


# -- a real Prometheus scraping the endpoint and a Pushgateway -------------------------------


def serve_cli(workspace: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``anomaly serve-metrics`` as its own long-running process."""
    command = [sys.executable, "-m", "anomaly.cli", "serve-metrics", "--workspace", str(workspace), "--port", str(port)]
    return servers.running(command, f"http://127.0.0.1:{port}/metrics", log_path, "anomaly serve-metrics", timeout_s=60)


def test_prometheus_scrapes_the_endpoint_and_the_pushgateway_and_promql_returns_the_band(scored: dict[str, Any], tmp_path: Path) -> None:
    workspace = scored["workspace"]
    points = {p.metric: p for p in read_latest(Workspace(workspace))}
    exporter_port, gateway_port = servers.free_port(), servers.free_port()
    scrape = (
        f"  - job_name: exporter\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
        f"  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{gateway_port}']\n"
    )
    with (
        serve_cli(workspace, exporter_port, tmp_path / "exporter.log") as exporter,
        servers.pushgateway(tmp_path / "gw", gateway_port) as gateway,
        servers.prometheus(tmp_path / "prom", scrape) as prometheus,
    ):
        served = httpx.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5)
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
        assert parsed(served.text) == parsed(exposition(workspace))

        outcome = push_metrics(workspace, {"url": gateway, "job": "anomaly-test"})
        assert outcome == {"pushed": 2, "error": None, "where": gateway, "job": "anomaly-test"}

        requests = points["requests"]
        selector = '{job="exporter",metric="requests",model="host",version="000001"}'
        (upper,) = servers.query(prometheus, f"anomaly_expected_upper{selector}")
        (lower,) = servers.query(prometheus, f"anomaly_expected_lower{selector}")
        (width,) = servers.query(prometheus, f"anomaly_expected_upper{selector} - anomaly_expected_lower{selector}")
        assert float(upper["value"][1]) == requests.upper and float(lower["value"][1]) == requests.lower
        assert float(width["value"][1]) == pytest.approx(2 * requests.band, rel=1e-12)
        assert upper["metric"]["instance"] == f"127.0.0.1:{exporter_port}"

        cpu = points["cpu"]
        pushed = '{job="anomaly-test",metric="cpu",model="host"}'
        (lower,) = servers.query(prometheus, f"anomaly_expected_lower{pushed}")
        (upper,) = servers.query(prometheus, f"anomaly_expected_upper{pushed}")
        assert (float(lower["value"][1]), float(upper["value"][1])) == (cpu.lower, cpu.upper)
        assert lower["metric"]["version"] == "000001"  # honor_labels kept the pushed labels, job included
        (active,) = servers.query(prometheus, 'anomaly_alert_active{job="anomaly-test",metric="requests"}')
        assert active["value"][1] == "1"
        firing = servers.query(prometheus, 'anomaly_score{job="exporter"} > anomaly_threshold')  # an alert rule's expression
        assert {f["metric"]["metric"] for f in firing} == {m for m, p in points.items() if p.score > p.threshold} >= {"requests"}
        assert exporter.poll() is None
    assert exporter.returncode == 0  # SIGTERM stops it cleanly
