"""Prometheus source against a real Prometheus: backfilled series in, the same values out, incrementally.

The server is the Debian package's (``apt-get install prometheus``, which also
ships ``promtool``): known series are written as OpenMetrics, backfilled into
a fresh TSDB with ``promtool tsdb create-blocks-from openmetrics``, and served
from a loopback port with a retention long enough to keep the blocks. Failure
modes a real server cannot be made to show on demand (HTTP 503, a redirect, a
bearer-token check) come from a small stub server.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pandas as pd
import pytest

from anomaly.io import prometheus as prometheus_source
from anomaly.errors import DataError
from anomaly.io.prometheus import PrometheusSource, parse_duration_ms, series_key
from anomaly.io.sources import SOURCE_KINDS, Source, SourceIOError, build_source, ingest
from anomaly.io.store import RawStore, check_metric_name
from tests import servers

INSTALL = "sudo apt-get install -y prometheus"
STEP = pd.Timedelta(minutes=1)
SAMPLES = 240
#: The last backfilled sample: on the minute, an hour ago, so every test window is in the past.
T_END = pd.Timestamp.now(tz="UTC").floor("min") - pd.Timedelta(hours=1)
T_START = T_END - (SAMPLES - 1) * STEP
TIMES = [T_START + i * STEP for i in range(SAMPLES)]
#: Where the "more data arrives later" test splits the backfill.
T_MID = TIMES[179]
#: Bcrypt (cost 4) of this password, for the server's basic-auth users file.
PASSWORD, PASSWORD_HASH = "test-only-password", "$2b$04$lbhuvn3E5l6dIFenteoA1.7g2UDe0sd31pbXNsOL8ai4VMkIvSBSS"

KEY_A, KEY_B, KEY_MEM = "demo_cpu.instance_a.job_api", "demo_cpu.instance_b_9090.job_api", "demo_mem.job_api"


def backfilled() -> dict[str, tuple[str, list[float]]]:
    """Store key -> (OpenMetrics series, values at TIMES): awkward floats, and a NaN that is no reading."""
    a = [math.sin(i / 9) * 37.1 + 0.1 for i in range(SAMPLES)]
    b = [1e-7 * i - 1 / 3 for i in range(SAMPLES)]
    mem = [float(2**40 + i) for i in range(SAMPLES)]
    mem[17] = math.nan
    return {
        KEY_A: ('demo_cpu{job="api",instance="a"}', a),
        KEY_B: ('demo_cpu{job="api",instance="b:9090"}', b),
        KEY_MEM: ('demo_mem{job="api"}', mem),
    }


def expected(start: pd.Timestamp = T_START, end: pd.Timestamp = T_END) -> set[tuple[str, pd.Timestamp, float]]:
    """The backfilled points in ``[start, end]`` as the store should hold them (NaN is no point)."""
    return {
        (key, t, v)
        for key, (_, values) in backfilled().items()
        for t, v in zip(TIMES, values)
        if start <= t <= end and not math.isnan(v)
    }


def as_set(frame: pd.DataFrame) -> set[tuple[str, pd.Timestamp, float]]:
    return set(zip(frame["metric"], frame["timestamp"], frame["value"]))


# -- a real Prometheus -------------------------------------------------------------------------


def binaries() -> tuple[str, str]:
    """``prometheus`` and ``promtool``; their absence fails (never skips) with the install command."""
    found = {name: shutil.which(name) for name in ("prometheus", "promtool")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: the Prometheus source tests need a real server; "
            f"install the Debian package: {INSTALL}",
            pytrace=False,
        )
    return str(found["prometheus"]), str(found["promtool"])


def backfill(data: Path, start: pd.Timestamp = T_START, end: pd.Timestamp = T_END) -> None:
    """Write the known series' samples in ``[start, end]`` into the TSDB at ``data`` as new blocks."""
    lines = ["# HELP demo_cpu CPU use.", "# TYPE demo_cpu gauge", "# HELP demo_mem Memory use.", "# TYPE demo_mem gauge"]
    series = sorted(backfilled().values())  # OpenMetrics wants a metric family's samples together
    for selector, values in series:
        lines += [f"{selector} {v!r} {int(t.timestamp())}" for t, v in zip(TIMES, values) if start <= t <= end]
    source = data.parent / f"backfill-{int(start.timestamp())}.om"
    source.write_text("\n".join([*lines, "# EOF", ""]).replace(" nan ", " NaN "))
    done = subprocess.run(
        [binaries()[1], "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode:
        pytest.fail(f"promtool could not backfill {source}: {done.stderr.strip() or done.stdout.strip()}", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def prometheus(data: Path, *, users: dict[str, str] | None = None) -> Iterator[str]:
    """A Prometheus serving the TSDB at ``data`` on a loopback port (basic auth if ``users``); its URL."""
    folder = data.parent
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")  # no targets: only backfilled data
    command = [
        binaries()[0],
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=100y",  # keeps backfilled blocks, however old
        f"--web.listen-address=127.0.0.1:{free_port()}",
    ]
    auth = None
    if users:
        (folder / "web.yml").write_text("basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in users.items()))
        command.append(f"--web.config.file={folder / 'web.yml'}")
        auth = (next(iter(users)), PASSWORD)
    url = "http://" + command[4].split("=", 1)[1]
    log_path = folder / "prometheus.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, process, log_path, auth)
        yield url
    finally:
        servers.stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path, auth: tuple[str, str] | None) -> None:
    """Poll ``/-/ready`` until the server answers 200; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited ({process.returncode}):\n{log_path.read_text()[-3000:]}", pytrace=False)
        try:
            if httpx.get(f"{url}/-/ready", auth=auth, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"prometheus at {url} not ready after 30 s:\n{log_path.read_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prometheus for the read-only tests, holding every known sample."""
    data = tmp_path_factory.mktemp("prometheus") / "data"
    backfill(data)
    with prometheus(data) as url:
        yield url


# -- request counting ----------------------------------------------------------------------------


class Counted(PrometheusSource):
    """The source, remembering each range request's parameters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[dict[str, str]] = []

    def _client(self) -> httpx.Client:
        client = super()._client()
        client.event_hooks = {"request": [lambda r: self.requests.append(dict(r.url.params))], "response": []}
        return client


def source(url: str, queries: Any = ("demo_cpu", "demo_mem"), **options: Any) -> Counted:
    return Counted(url, list(queries) if isinstance(queries, tuple) else queries, **options)


# -- ingest from a real server --------------------------------------------------------------------


def test_the_ingest_flow_stores_exactly_the_backfilled_values(
    server: str, tmp_path: Path, prefect_harness: None
) -> None:
    from flows.ingest import ingest_flow

    assert SOURCE_KINDS["prometheus"] == "anomaly.io.prometheus:PrometheusSource"
    spec = {"kind": "prometheus", "url": server, "queries": ["demo_cpu", "demo_mem"], "step": "1m", "lookback": "7d"}
    result = ingest_flow(spec, str(tmp_path))

    stored = RawStore(tmp_path / "store").read()
    at_samples = stored[stored["timestamp"] <= T_END]
    assert as_set(at_samples) == expected(), "every backfilled value, bit for bit, at its own time"
    assert result["rows_by_metric"][KEY_MEM] == SAMPLES - 1 + 5, "the NaN sample is no reading"
    # After the last sample Prometheus repeats it for its 5-minute lookback delta, as any graph would.
    tail, last = stored[stored["timestamp"] > T_END], {m: v for m, _, v in expected(T_END)}
    assert as_set(tail) == {(m, T_END + k * STEP, v) for m, v in last.items() for k in range(1, 6)}


def test_a_second_pull_with_nothing_new_is_quiet(server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = RawStore(tmp_path / "store")
    pulls = source(server, end=T_END.isoformat())
    assert isinstance(pulls, Source)
    first = ingest(pulls, store)
    assert (first.rows_written, first.missing_dropped) == (len(expected()), 0)
    assert len(pulls.requests) == 2, "one request per query: 4 hours of minutes fit in one"
    recorded = {k: (s.name, dict(s.labels)) for k, s in store.series().items()}
    assert recorded == {
        KEY_A: ("demo_cpu", {"instance": "a", "job": "api"}),
        KEY_B: ("demo_cpu", {"instance": "b:9090", "job": "api"}),
        KEY_MEM: ("demo_mem", {"job": "api"}),
    }, "each series' name and labels as Prometheus gave them: 'b:9090', not the key's 'b_9090'"
    written = store.catalogue_path.stat().st_mtime_ns

    caplog.set_level(logging.INFO)
    again = ingest(pulls, store)
    assert (again.batch_id, again.rows_in, again.rows_written) == (None, 0, 0)
    assert len(pulls.requests) == 2, "every watermark is at the end: nothing to ask"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert store.catalogue_path.stat().st_mtime_ns == written and len(store.series()) == 3, "nothing changed, nothing rewritten"


def test_a_pull_after_more_data_arrived_fetches_only_the_new_points(tmp_path: Path) -> None:
    data, store = tmp_path / "data", RawStore(tmp_path / "store")
    backfill(data, end=T_MID)
    with prometheus(data) as url:
        first = ingest(source(url, end=T_MID.isoformat()), store)
    assert first.watermarks == {KEY_A: T_MID, KEY_B: T_MID, KEY_MEM: T_MID}

    backfill(data, start=T_MID + STEP)  # an hour of new samples lands in the same TSDB
    with prometheus(data) as url:
        later = source(url, end=T_END.isoformat())
        second = ingest(later, store)
    new = expected(T_MID + STEP)
    assert (second.rows_in, second.rows_written, second.duplicates_dropped) == (len(new), len(new), 0)
    assert [(r["query"], r["start"]) for r in later.requests] == [
        (q, str(int((T_MID + STEP).timestamp()))) for q in ("demo_cpu", "demo_mem")
    ], "each query starts one step after its series' watermark"
    assert as_set(store.read()) == expected()


def test_a_long_window_is_fetched_in_requests_of_at_most_11000_points(server: str) -> None:
    pulls = source(server, ["demo_cpu"], step="1s", lookback="4h", end=T_END.isoformat())
    got = pulls.fetch({})
    spans = [(float(r["end"]) - float(r["start"])) / float(r["step"]) + 1 for r in pulls.requests]
    assert spans == [11_000, 4 * 3600 - 11_000], "Prometheus refuses more than 11,000 points a series"
    for key, (_, values) in list(backfilled().items())[:2]:
        series = got[got["metric"] == key].set_index("timestamp")["value"]
        seconds = pd.date_range(T_START, T_END, freq="1s")
        assert series.index.equals(seconds), "one point a second from the first sample on, none twice"
        assert series.equals(pd.Series(values, TIMES).reindex(seconds, method="ffill")), "each second: the last sample"


def test_chunking_changes_the_requests_not_the_points(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = source(server, end=T_END.isoformat(), lookback="4h")
    expected_points = whole.fetch({})
    monkeypatch.setattr(prometheus_source, "MAX_POINTS_PER_SERIES", 7)
    chunked = source(server, end=T_END.isoformat(), lookback="4h")
    got = chunked.fetch({})
    assert len(chunked.requests) == 2 * math.ceil(SAMPLES / 7) and len(whole.requests) == 2
    assert as_set(got) == as_set(expected_points) == expected(), "the window (end - 4h, end] holds every sample"
    assert not got.duplicated(["metric", "timestamp"]).any()


def test_named_queries_key_their_series_by_the_name(server: str, caplog: pytest.LogCaptureFixture) -> None:
    a = dict(zip(TIMES, backfilled()[KEY_A][1]))
    zero_at = TIMES[100]
    queries = {
        "cpu_total": "sum by (job) (demo_cpu)",
        "inverse": f'1 / (demo_cpu{{instance="a"}} - {a[zero_at]!r})',  # +Inf where the sample equals it
    }
    named = source(server, queries, end=T_END.isoformat())
    got = named.fetch({})
    assert sorted(set(got["metric"])) == ["cpu_total.job_api", "inverse.instance_a.job_api"]
    assert {k: (s.name, dict(s.labels)) for k, s in named.fetched_series().items()} == {
        "cpu_total.job_api": ("cpu_total", {"job": "api"}),
        "inverse.instance_a.job_api": ("inverse", {"instance": "a", "job": "api"}),
    }, "a named query's series are named by it"
    total = got[got["metric"] == "cpu_total.job_api"].set_index("timestamp")["value"]
    b = dict(zip(TIMES, backfilled()[KEY_B][1]))
    assert total.to_dict() == pytest.approx({t: a[t] + b[t] for t in TIMES})
    inverse = got[got["metric"] == "inverse.instance_a.job_api"]
    assert len(inverse) == SAMPLES - 1 and zero_at not in set(inverse["timestamp"]), "the infinity is dropped"
    assert any("dropped 1 infinite value(s) of 'inverse.instance_a.job_api'" in r.getMessage() for r in caplog.records)


def test_series_that_would_share_a_key_are_refused(server: str) -> None:
    renamed = 'label_replace(demo_cpu{instance="b:9090"}, "instance", "b_9090", "", "")'
    with pytest.raises(
        DataError,
        match=r"series demo_cpu\{instance='b:9090', job='api'\} and demo_cpu\{instance='b_9090', job='api'\} "
        r"would both be stored as 'demo_cpu.instance_b_9090.job_api'",
    ):
        source(server, ["demo_cpu", renamed], end=T_END.isoformat()).fetch({})


def test_an_expression_without_a_metric_name_needs_a_name(server: str) -> None:
    with pytest.raises(DataError, match=r"query 'sum\(demo_cpu\)' returns series without a metric name .* mapping form"):
        source(server, ["sum(demo_cpu)"], end=T_END.isoformat()).fetch({})


# -- errors from a real server --------------------------------------------------------------------


def test_a_bad_query_is_a_data_error_with_prometheus_reason(server: str, tmp_path: Path) -> None:
    store = RawStore(tmp_path / "store")
    ingest(source(server, end=T_MID.isoformat()), store)
    before = store.read()
    with pytest.raises(DataError, match=r"rejected query 'demo_cpu\{job=' \(HTTP 400\): bad_data: .*parse error") as info:
        ingest(source(server, ["demo_cpu", "demo_cpu{job="], end=T_END.isoformat()), store)
    assert not isinstance(info.value, OSError), "a retry cannot fix the query"
    assert store.read().equals(before), "a failed pull stores nothing, not even the good query's points"


def test_an_unreachable_server_is_a_retryable_error_and_loses_nothing(server: str, tmp_path: Path) -> None:
    store = RawStore(tmp_path / "store")
    ingest(source(server, end=T_MID.isoformat()), store)
    before = store.read()
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceIOError, match=f"cannot reach Prometheus at {down} for query 'demo_cpu': ConnectError") as info:
        ingest(source(down, end=T_END.isoformat()), store)
    assert isinstance(info.value, OSError), "the ingest flow retries OSErrors with backoff"
    assert store.read().equals(before)


def test_a_server_that_never_answers_times_out_as_a_retryable_error() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(SourceIOError, match=r"did not answer query 'demo_cpu' within 0.3s \(ReadTimeout\)"):
            PrometheusSource(url, "demo_cpu", timeout_s=0.3).fetch({})
    assert time.monotonic() - started < 5


def test_basic_auth_against_a_server_that_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    backfill(data, start=T_MID)
    monkeypatch.setenv("PROM_TEST_PASSWORD", PASSWORD)
    with prometheus(data, users={"reader": PASSWORD_HASH}) as url:
        good = PrometheusSource(url, "demo_mem", username="reader", password_env="PROM_TEST_PASSWORD", end=T_END.isoformat())
        assert len(good.fetch({})) == len([p for p in expected(T_MID) if p[0] == KEY_MEM])
        assert len(PrometheusSource(url, "demo_mem", username="reader", password=PASSWORD, end=T_END.isoformat()).fetch({}))

        monkeypatch.setenv("PROM_TEST_PASSWORD", "wrong-" + PASSWORD)
        with pytest.raises(DataError, match=r"refused the credentials \(HTTP 401\) for query 'demo_mem'") as info:
            good.fetch({})
        with pytest.raises(DataError, match="refused the credentials"):
            PrometheusSource(url, "demo_mem", end=T_END.isoformat()).fetch({})
    assert not isinstance(info.value, OSError)
    shown = [repr(good), good.name, str(info.value), caplog.text]
    assert not any(PASSWORD in text for text in shown), "the password is in no repr, name, message or log"
    assert "PROM_TEST_PASSWORD" not in str(info.value) and repr(good).endswith("auth='basic')")


# -- a stub server for what a real one will not do on demand -------------------------------------


@dataclass
class Stub:
    """Canned answers, in order (the last repeats), and the requests that received them."""

    url: str = ""
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers.append((status, headers or {"Content-Type": "application/json"}, raw))


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "headers": dict(self.headers)})
            status, headers, body = state.answers[min(len(state.requests), len(state.answers)) - 1]
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def matrix(*series: tuple[dict[str, str], list[tuple[float, str]]], warnings: list[str] | None = None) -> dict[str, Any]:
    result = [{"metric": labels, "values": [list(v) for v in values]} for labels, values in series]
    body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    return {**body, "warnings": warnings} if warnings else body


def test_a_bearer_token_from_the_environment_is_sent_and_never_shown(
    stub: Stub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PROM_TEST_TOKEN", "tok-123-secret")
    stub.answer(200, matrix(({"__name__": "up", "job": "x"}, [(1714521600, "1"), (1714521660, "NaN")])))
    pulls = PrometheusSource(stub.url + "/", "up", token_env="PROM_TEST_TOKEN", end="2024-05-01T00:01:00Z", lookback="2m")
    got = pulls.fetch({})
    assert as_set(got) == {("up.job_x", pd.Timestamp("2024-05-01", tz="UTC"), 1.0)}, "NaN is no reading"
    assert stub.requests[0]["headers"]["Authorization"] == "Bearer tok-123-secret"
    assert stub.requests[0]["path"] == "/api/v1/query_range?query=up&start=1714521600&end=1714521660&step=60&timeout=30"
    assert "tok-123-secret" not in repr(pulls) + caplog.text

    monkeypatch.delenv("PROM_TEST_TOKEN")
    with pytest.raises(DataError, match="variable 'PROM_TEST_TOKEN' named by token_env for source 'prometheus' is not set"):
        pulls.fetch({})
    monkeypatch.setenv("PROM_TEST_TOKEN", "tok-123-secret\n")  # a header would carry it into httpx's error
    with pytest.raises(DataError, match="bearer token of source 'prometheus' has line breaks") as info:
        pulls.fetch({})
    assert "tok-123" not in str(info.value) and len(stub.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (503, {"status": "error", "errorType": "unavailable", "error": "too busy"}, SourceIOError, r"failed query 'up' \(HTTP 503\): unavailable: too busy"),
        (502, b"<html>Bad Gateway</html>", SourceIOError, r"failed query 'up' \(HTTP 502\): <html>Bad Gateway</html>"),
        (429, b"slow down", SourceIOError, r"\(HTTP 429\): slow down"),
        (422, {"status": "error", "errorType": "execution", "error": "many-to-many matching"}, DataError, r"rejected query 'up' \(HTTP 422\): execution: many-to-many"),
        (404, b"404 page not found", DataError, r"has no /api/v1/query_range \(HTTP 404\): is url the Prometheus server's base URL"),
        (200, b"<html>login</html>", DataError, r"did not answer like Prometheus to query 'up'"),
        (200, {"status": "success", "data": {"resultType": "vector", "result": []}}, DataError, r"returned no range result \(matrix\) for query 'up'"),
        (200, matrix(({"__name__": "up"}, [(1714521600, "high")])), DataError, r"query 'up': unreadable sample for 'up'"),
    ],
)  # fmt: skip
def test_answers_are_classified_by_whether_a_retry_can_help(
    stub: Stub, status: int, body: Any, error: type, message: str
) -> None:
    stub.answer(status, body, {"Content-Type": "text/html"} if isinstance(body, bytes) else None)
    with pytest.raises(error, match=message) as info:
        PrometheusSource(stub.url, "up", end="2024-05-01", lookback="1h").fetch({})
    assert isinstance(info.value, OSError) == (error is SourceIOError)


def test_a_redirect_is_not_followed(stub: Stub) -> None:
    stub.answer(302, b"", {"Location": "https://sso.example/login"})
    with pytest.raises(DataError, match=r"redirected query 'up' \(HTTP 302\) to https://sso.example/login"):
        PrometheusSource(stub.url, "up", end="2024-05-01", lookback="1h").fetch({})
    assert len(stub.requests) == 1


def test_prometheus_warnings_are_logged_and_the_points_kept(stub: Stub, caplog: pytest.LogCaptureFixture) -> None:
    stub.answer(200, matrix(({"__name__": "up"}, [(1714521600, "2.5")]), warnings=["result may be partial"]))
    got = PrometheusSource(stub.url, "up", end="2024-05-01", lookback="1h").fetch({})
    assert list(got["value"]) == [2.5]
    assert "query 'up': Prometheus warns: result may be partial" in caplog.text


# -- keys and parameters --------------------------------------------------------------------------


def test_series_keys_are_readable_sorted_and_safe() -> None:
    labels = {"__name__": "http_requests_total", "job": "api", "instance": "host1:9090"}
    assert series_key(labels) == "http_requests_total.instance_host1_9090.job_api"
    assert series_key(labels, "requests") == "requests.instance_host1_9090.job_api"
    assert series_key({"__name__": "job:rate:5m"}) == "job:rate:5m", "recording-rule names pass unchanged"
    assert series_key({"__name__": "x", "path": "/a b/ü.c", "le": "+Inf"}) == "x.le__Inf.path__a_b___c"
    assert series_key({}, "total") == "total"


def test_long_series_keys_are_cut_and_kept_apart_by_a_hash() -> None:
    long = {"__name__": "m", "pod": "p" * 300}
    key, other = series_key(long), series_key({**long, "pod": "p" * 299 + "q"})
    assert len(key) == len(other) == 200 and key != other
    assert key.startswith("m.pod_ppp") and key[-9] == "-" and check_metric_name(key) == key
    assert series_key(long) == key, "deterministic"


@pytest.mark.parametrize(
    ("value", "ms"),
    [("60s", 60_000), ("1m", 60_000), ("1h30m", 5_400_000), ("7d", 604_800_000), ("7D", 604_800_000), ("1w", 604_800_000), ("250ms", 250), (15, 15_000), (0.5, 500)],
)  # fmt: skip
def test_durations_use_prometheus_units(value: Any, ms: int) -> None:
    assert parse_duration_ms(value, "step") == ms


@pytest.mark.parametrize("value", ["", "5M", "1.5.5s", "s", "-1s", "0s", 0, "1 m", "1m1", True])
def test_bad_durations_are_named(value: Any) -> None:
    with pytest.raises(DataError, match=f"step {value!r} is not a duration of whole milliseconds"):
        parse_duration_ms(value, "step")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://reader:hunter2@prom:9090"}, "url for host 'prom' carries credentials; pass username"),
        ({"url": "prom:9090"}, "url must look like 'http://host:9090'"),
        ({"queries": []}, "needs at least one query"),
        ({"queries": {"a.b": "up"}}, "query name 'a.b' cannot prefix metric names"),
        ({"queries": ["up", " "]}, "query must be a non-empty PromQL string, got ' '"),
        ({"queries": 3}, "queries must be a PromQL string, a list of them or a mapping"),
        ({"lookback": "30s"}, "lookback '30s' is shorter than the step '60s'"),
        ({"end": "yesterday-ish"}, "end 'yesterday-ish' is not an ISO time or epoch seconds"),
        ({"timeout_s": 0}, "timeout_s must be a positive number of seconds, got 0"),
        ({"username": "reader"}, "basic auth needs a username and exactly one of password or password_env"),
        ({"password": "hunter2"}, "basic auth needs a username"),
        ({"username": "r", "password_env": "P", "token_env": "T"}, "not both"),
        ({"token": "hunter2", "token_env": "T"}, "bearer auth needs exactly one of token or token_env"),
    ],
)  # fmt: skip
def test_bad_options_are_named_without_secrets(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        PrometheusSource(**{"url": "http://prom:9090", "queries": ["up"], **options})
    assert "hunter2" not in str(info.value)


def test_built_from_a_plain_spec_with_the_secret_hidden() -> None:
    assert SOURCE_KINDS["prometheus"] == "anomaly.io.prometheus:PrometheusSource"
    spec = {"kind": "prometheus", "url": "https://prom.example/", "queries": {"cpu": "demo_cpu"}, "token": "hunter2"}
    built = build_source(json.loads(json.dumps(spec)))
    assert isinstance(built, PrometheusSource) and built.url == "https://prom.example"
    assert repr(built) == "PrometheusSource('https://prom.example', {'cpu': 'demo_cpu'}, step=60s, auth='bearer')"
