"""Hostile answers from a webhook receiver, a damaged report ledger, and hostile command-line input.

Webhook cases run against a real HTTP server on loopback whose answer to
each payload the test scripts by the payload's ``key``. A case whose unfixed
behaviour reads without bound (a huge or trickling answer) runs its client
in a bounded child. Command-line cases that could allocate without bound (a
YAML bomb, deep nesting, a huge file) also run in bounded children; the rest
call ``main`` in process, which is as strict (exit 2, one ``error:`` line).
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import pandas as pd
import pytest

from anomaly.ops.alerts import LEDGER_VERSION, Ledger
from anomaly.cli import main
from anomaly.core.config import load_config, parse_value
from anomaly.errors import ConfigError, DataError
from anomaly.ops.workspace import REPORTS, STATE
from anomaly.ops.reports import SCHEMA_PATH, write_report
from anomaly.ops import webhooks
from anomaly.ops.webhooks import Webhook, flush
from tests.adversarial.conftest import Outcome, assert_one_line_error, run_cli, run_python, snapshot

T0 = pd.Timestamp("2026-03-01 00:00", tz="UTC")
Answer = Callable[[BaseHTTPRequestHandler], None]


# -- a scripted receiver ----------------------------------------------------------------------


def status(code: int, location: str | None = None) -> Answer:
    """Answer ``code`` with an empty body (and a ``Location`` for a redirect)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def endless(code: int) -> Answer:
    """Answer ``code`` with a body that never ends (close-delimited): a client that reads it all never stops."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()
        block = b"rejected " * 7000
        for _ in range(40_000):  # ~2.5 GB at most, far past any sane read
            handler.wfile.write(block)

    return answer


def trickle(code: int) -> Answer:
    """Answer ``code`` promptly, then send the body one byte at a time, each well inside any read timeout."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        for _ in range(1200):  # a minute at most, so the thread ends on its own
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.05)

    return answer


def slow(code: int, seconds: float) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        status(code)(handler)

    return answer


class Receiver:
    """A loopback webhook whose answer to each payload is scripted by the payload's ``key`` (default 204)."""

    def __init__(self, answers: dict[str, Answer] | None = None) -> None:
        self.keys: list[str] = []
        self.answers = answers or {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.keys.append(body["key"])
                try:
                    receiver.answers.get(body["key"], status(204))(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a bounded client does

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def payload(i: int) -> dict[str, Any]:
    return {"key": f"alert{i}:new", "event": "anomaly.alert.new", "text": f"alert {i}", "metric": f"m{i}", "severity": "high", "score": 2.0}


def waiting(keys: range, at: pd.Timestamp = T0) -> list[dict[str, Any]]:
    return [{"key": f"alert{i}:new", "payload": payload(i), "queued_at": at.isoformat(), "attempts": 0, "last_error": None} for i in keys]


def workspace_with_outbox(root: Path, n: int, at: pd.Timestamp = T0) -> Path:
    """A workspace whose ledger (in the previous, version-2 layout) holds ``n`` alerts undelivered since ``at``."""
    workspace = root / "ws"
    (workspace / REPORTS).mkdir(parents=True)
    state = {"ledger_version": 2, "last_report": at.isoformat(), "alerts": {}, "processed_events": [], "processed_runs": [], "outbox": waiting(range(n), at)}
    (workspace / REPORTS / STATE).write_text(json.dumps(state))
    return workspace


def ledger_of(workspace: Path) -> dict[str, Any]:
    return json.loads((workspace / REPORTS / STATE).read_text())


def hook(url: str, **settings: Any) -> dict[str, Any]:
    return {"url": url, "timeout": 2, "retries": 1, "backoff": 0, **settings}


# -- item 4: one rejected alert must not block the others -------------------------------------


@pytest.mark.parametrize("code", [400, 401, 404, 410, 413, 422])
def test_a_rejected_alert_is_parked_with_its_reason_and_the_others_go_out_in_order(tmp_path: Path, code: int) -> None:
    workspace = workspace_with_outbox(tmp_path, 4)
    with Receiver({"alert1:new": status(code)}) as receiver:
        report = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=hook(receiver.url))
    assert receiver.keys == ["alert0:new", "alert1:new", "alert2:new", "alert3:new"]  # tried once (not retried), then the rest, in order
    assert report.delivery["delivered"] == 3 and report.delivery["undelivered"] == 0 and report.delivery["parked"] == 1
    (rejected,) = report.delivery["rejected"]
    assert rejected["key"] == "alert1:new" and rejected["reason"].startswith(f"HTTP {code}")
    state = ledger_of(workspace)
    assert state["ledger_version"] == LEDGER_VERSION and state["outbox"] == []
    (parked,) = state["parked"]
    assert parked["key"] == "alert1:new" and parked["payload"] == payload(1)  # kept whole, so nothing is lost
    assert parked["reason"].startswith(f"HTTP {code}") and parked["parked_at"] == (T0 + pd.Timedelta("1h")).isoformat()


def test_the_next_report_says_once_which_alert_was_rejected_and_why(tmp_path: Path) -> None:
    workspace = workspace_with_outbox(tmp_path, 2)
    with Receiver({"alert0:new": status(422)}) as receiver:
        write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=hook(receiver.url))
    second = write_report(workspace, now=T0 + pd.Timedelta("2h"))
    (listed,) = second.document["rejected_deliveries"]
    jsonschema.validate(second.document, json.loads(SCHEMA_PATH.read_text()))
    assert (listed["key"], listed["metric"], listed["reason"]) == ("alert0:new", "m0", "HTTP 422: ")
    assert "webhook rejected" in second.markdown and "alert0:new" in second.markdown and "HTTP 422" in second.markdown
    assert "HTTP 422" in second.paths["html"].read_text()
    third = write_report(workspace, now=T0 + pd.Timedelta("3h"))
    assert third.document["rejected_deliveries"] == [] and "webhook rejected" not in third.markdown
    assert [p["key"] for p in ledger_of(workspace)["parked"]] == ["alert0:new"]  # still kept in the ledger


@pytest.mark.parametrize("code", [301, 308])
def test_a_redirect_is_parked_naming_where_it_points(tmp_path: Path, code: int) -> None:
    workspace = workspace_with_outbox(tmp_path, 2)
    moved = "https://hooks.example.org/new-path"
    with Receiver({"alert0:new": status(code, moved)}) as receiver:
        report = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=hook(receiver.url, retries=2))
    assert receiver.keys == ["alert0:new", "alert1:new"]  # a redirect is not retried and does not block
    (parked,) = ledger_of(workspace)["parked"]
    assert parked["reason"].startswith(f"HTTP {code}") and moved in parked["reason"]
    assert report.delivery["delivered"] == 1


@pytest.mark.parametrize("answer", [status(408), status(429), status(503)], ids=["408", "429", "503"])
def test_a_transient_failure_still_stops_the_run_and_the_next_run_retries_oldest_first(tmp_path: Path, answer: Answer) -> None:
    workspace = workspace_with_outbox(tmp_path, 3)
    with Receiver({"alert0:new": answer}) as receiver:
        first = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=hook(receiver.url, retries=0))
        assert receiver.keys == ["alert0:new"] and first.delivery["undelivered"] == 3 and first.delivery["parked"] == 0
        receiver.answers = {}
        second = write_report(workspace, now=T0 + pd.Timedelta("2h"), webhook=hook(receiver.url, retries=0))
    assert receiver.keys == ["alert0:new", "alert0:new", "alert1:new", "alert2:new"]
    assert second.delivery["delivered"] == 3 and ledger_of(workspace)["outbox"] == [] and ledger_of(workspace)["parked"] == []


def test_a_slow_receiver_costs_a_run_at_most_its_delivery_budget(tmp_path: Path) -> None:
    outbox, parked = waiting(range(6)), []
    with Receiver({f"alert{i}:new": slow(400, 0.3) for i in range(6)}) as receiver:
        started = time.monotonic()
        result = flush(outbox, Webhook(receiver.url, timeout=2, retries=0), T0, parked, budget_s=0.5)
        took = time.monotonic() - started
    assert took < 1.5 and len(receiver.keys) == 2 == result["parked"]
    assert [item["key"] for item in outbox] == [f"alert{i}:new" for i in range(2, 6)]  # the rest wait, in order


def test_parked_deliveries_are_bounded_in_count_and_age(tmp_path: Path) -> None:
    old = {"key": "ancient:new", "payload": {}, "queued_at": T0.isoformat(), "attempts": 1, "reason": "HTTP 400: ", "parked_at": T0.isoformat(), "reported_at": T0.isoformat()}
    parked = [old] + [{**old, "key": f"p{i}:new", "parked_at": (T0 + webhooks.PARKED_KEEP).isoformat()} for i in range(webhooks.PARKED_LIMIT)]
    outbox = waiting(range(3), T0 + webhooks.PARKED_KEEP)
    with Receiver({f"alert{i}:new": status(400) for i in range(3)}) as receiver:
        flush(outbox, Webhook(receiver.url, retries=0), T0 + webhooks.PARKED_KEEP + pd.Timedelta("1h"), parked)
    assert len(parked) == webhooks.PARKED_LIMIT and "ancient:new" not in {p["key"] for p in parked}
    assert [p["key"] for p in parked[-3:]] == ["alert0:new", "alert1:new", "alert2:new"]  # the newest are kept


_REPORT_IN_CHILD = """
import json, sys
import pandas as pd
from anomaly.ops.reports import SCHEMA_PATH, write_report
report = write_report(sys.argv[1], now=pd.Timestamp("2026-03-01 01:00", tz="UTC"), webhook={"url": sys.argv[2], "timeout": 1, "retries": 0})
print(json.dumps(report.delivery))
"""


@pytest.mark.parametrize("answer", [endless(400), trickle(400)], ids=["endless-body", "trickling-body"])
def test_a_huge_or_trickling_answer_is_read_bounded_in_memory_and_time(tmp_path: Path, answer: Answer) -> None:
    workspace = workspace_with_outbox(tmp_path, 2)
    with Receiver({"alert0:new": answer}) as receiver:
        started = time.monotonic()
        outcome = run_python(_REPORT_IN_CHILD, str(workspace), receiver.url, memory_mb=2048, timeout_s=40)
        took = time.monotonic() - started
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    delivery = json.loads(outcome.stdout.splitlines()[-1])
    assert delivery["delivered"] == 1 and delivery["parked"] == 1 and receiver.keys == ["alert0:new", "alert1:new"]
    (parked,) = ledger_of(workspace)["parked"]
    assert parked["reason"].startswith("HTTP 400") and len(parked["reason"]) < 400
    assert took < 25


def test_anomaly_report_prints_the_rejected_alert_and_what_went_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = workspace_with_outbox(tmp_path, 3, pd.Timestamp.now(tz="UTC") - pd.Timedelta("1h"))  # the command reports now
    with Receiver({"alert2:new": status(404)}) as receiver:
        assert main(["report", str(workspace), "--webhook", receiver.url]) == 0
    printed = capsys.readouterr().out
    assert "2 delivered, 0 waiting, 1 rejected" in printed
    assert "alert2:new" in printed and "HTTP 404" in printed


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("http://[::1/hook", "webhook url is not a valid URL"),
        ({"url": "http://h", "timeout": "soon"}, "webhook timeout"),
        ({"url": "http://h", "retries": 10**9}, "webhook retries"),
        ({"url": "http://h", "headers": {"X-Token": "a\r\nInjected: 1"}}, "webhook header 'X-Token'"),
        ({"url": "http://h", "headers": {"X-Token": "caf\u00e9"}}, "webhook header 'X-Token'"),
    ],
    ids=["unparsable-url", "timeout-not-a-number", "retries-without-bound", "header-with-newline", "header-not-ascii"],
)
def test_a_webhook_setting_that_would_crash_or_never_end_is_refused_by_name(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        Webhook.from_spec(spec)
    assert "\n" not in str(info.value) and "Injected" not in str(info.value)


# -- item 8: a damaged ledger is one line, and nothing is overwritten --------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x00\xffnot json at all", "cannot read"),
        (b'{"ledger_version": 3, "alerts": {', "cannot read"),
        (b"[]", "is not a report ledger"),
        (b'"a string"', "is not a report ledger"),
        (b'{"ledger_version": 99, "alerts": {}}', "ledger_version 99"),
        (b'{"ledger_version": "3"}', "ledger_version '3'"),
        (b'{"ledger_version": 2, "alerts": "x", "processed_events": [], "processed_runs": [], "outbox": [], "last_report": null}', "is not a report ledger"),
        (b'{"ledger_version": 2, "alerts": {"a": {"id": 1}}, "processed_events": [], "processed_runs": [], "outbox": [], "last_report": null}', "is not a report ledger"),
    ],
    ids=["garbage", "truncated", "list", "string", "newer-version", "version-as-text", "alerts-not-a-mapping", "alert-missing-fields"],
)
def test_a_damaged_ledger_is_one_line_and_nothing_is_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, fragment: str) -> None:
    workspace = workspace_with_outbox(tmp_path, 1)
    write_report(workspace, now=T0 + pd.Timedelta("1h"))  # an earlier report: its files and the lock are there
    (workspace / REPORTS / STATE).write_bytes(content)
    before = snapshot(workspace)
    code = main(["report", str(workspace)])
    line = assert_one_line_error(Outcome(code, "", capsys.readouterr().err), fragment, str(workspace / REPORTS / STATE))
    assert len(line) < 400
    assert snapshot(workspace) == before


@pytest.mark.parametrize("content", [b"[]", b'{"at": "2026-03-01T00:00:00+00:00", "results": [1, 2]}'], ids=["list", "results-not-records"])
def test_a_damaged_run_record_is_one_line_naming_it_and_nothing_is_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    workspace = workspace_with_outbox(tmp_path, 0)
    write_report(workspace, now=T0 + pd.Timedelta("1h"))
    record = workspace / "runs" / "score-20260301T010000000000Z-1.json"
    record.parent.mkdir()
    record.write_bytes(content)
    before = snapshot(workspace)
    line = assert_one_line_error(cli(["report", str(workspace)], capsys), repr(str(record)), "is not a score run's record")
    assert len(line) < 400 and snapshot(workspace) == before


def test_a_ledger_in_the_previous_layout_is_read_and_kept_whole() -> None:
    previous = {"ledger_version": 2, "last_report": None, "alerts": {}, "processed_events": ["e"], "processed_runs": ["r"], "outbox": waiting(range(2))}
    ledger = Ledger.from_json(previous)
    assert ledger.outbox == previous["outbox"] and ledger.parked == [] and ledger.processed_events == {"e"}
    assert Ledger.from_json(json.loads(json.dumps(ledger.to_json()))).to_json() == ledger.to_json()


# -- item 8: --set and --config ----------------------------------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("history")
    frame = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=300, freq="5min"), "cpu": [float(i % 17) for i in range(300)]})
    frame.to_csv(folder / "history.csv", index=False)
    return folder / "history.csv"


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    code = main(args)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[1", "'[1'"),  # ParserError
        ("@x", "'@x'"),  # ScannerError
        ("*nowhere", "'*nowhere'"),  # ComposerError: an alias never defined
        ("!!binary a", "'!!binary a'"),  # ConstructorError of a safe tag
        ("!!timestamp 2026-13-45", "'!!timestamp 2026-13-45'"),  # a safe tag whose constructor raises ValueError
        ("9" * 5000, "5,00"),  # more digits than Python converts: ValueError
    ],
    ids=["parser", "scanner", "undefined-alias", "bad-binary", "bad-timestamp", "5000-digit-int"],
)
def test_a_set_value_that_is_not_valid_yaml_is_one_line_naming_it(tmp_path: Path, history: Path, capsys: pytest.CaptureFixture[str], value: str, fragment: str) -> None:
    before = snapshot(history.parent)
    outcome = cli(["train", str(history), "--out", str(tmp_path / "m"), "--set", f"training.epochs={value}"], capsys)
    line = assert_one_line_error(outcome, "training.epochs", fragment)
    assert len(line) < 300 and not (tmp_path / "m").exists() and snapshot(history.parent) == before


def test_a_python_tag_in_set_is_refused_and_runs_nothing(tmp_path: Path, history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    value = f"!!python/object/apply:os.system ['touch {marker}']"
    outcome = cli(["train", str(history), "--out", str(tmp_path / "m"), "--set", f"training.epochs={value}"], capsys)
    assert_one_line_error(outcome, "training.epochs", "!!python/object/apply:os.system")
    assert not marker.exists()


def test_set_values_and_names_are_bounded_in_the_python_api() -> None:
    with pytest.raises(ConfigError, match=r"--set scoring\.smoothing_time is too long: 'xxx.*\(200,002 characters\)") as info:
        load_config(None, ["scoring.smoothing_time=" + "x" * 200_000])
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match="--set expects SECTION.KEY=VALUE") as info:
        load_config(None, ["s" * 100_000 + ".key=1"])
    assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match=r"'\[1'"):
        parse_value("[1", "training.epochs")


#: Within the length limit, yet deeper than YAML's recursive composer can go.
_NESTED_SET = "[" * 490 + "]" * 490
#: Nine lists of nine, nine deep: 9^9 leaves when printed or copied, a few hundred bytes as YAML.
_LAUGHS = "[" + ", ".join(["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "]"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(_NESTED_SET, "nested more than"), (_LAUGHS, "aliases expand to more than"), ("[" * 60_000 + "]" * 60_000, "is too long")],
    ids=["490-deep", "billion-laughs", "120000-characters"],
)
def test_a_set_value_that_explodes_is_refused_in_bounded_memory_and_time(tmp_path: Path, history: Path, value: str, fragment: str) -> None:
    outcome = run_cli(["train", str(history), "--out", str(tmp_path / "m"), "--set", f"training.epochs={value}"], timeout_s=40)
    line = assert_one_line_error(outcome, "training.epochs", fragment)
    assert len(line) < 300 and not (tmp_path / "m").exists()


def _bomb(path: Path) -> None:
    path.write_text(f"training:\n  epochs: {_LAUGHS}\n")


def _huge(path: Path) -> None:
    path.write_text("training: {epochs: 1}\n")
    os.truncate(path, 100 * 1024 * 1024)  # 100 MB, sparse


def _deep(path: Path) -> None:
    path.write_text("[" * 200_000 + "]" * 200_000)


def _big_list(path: Path) -> None:
    path.write_text(json.dumps(list(range(100_000))))


def _binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 100)


def _long_int(path: Path) -> None:
    path.write_text("training:\n  epochs: " + "7" * 5000 + "\n")


def _key_types(path: Path) -> None:
    path.write_text("1: a\nx: b\n")  # two unknown sections that cannot even be sorted together


@pytest.mark.parametrize(
    ("name", "make", "fragment"),
    [
        ("bomb.yaml", _bomb, "aliases expand to more than"),
        ("huge.yaml", _huge, "larger than"),
        ("deep.json", _deep, "nested more than"),
        ("deep.yaml", _deep, "nested more than"),
        ("list.json", _big_list, "must be a mapping"),
        ("binary.yaml", _binary, "not UTF-8 text"),
        ("digits.yaml", _long_int, "is not valid"),
        ("keys.yaml", _key_types, "section names must be text"),
    ],
    ids=["billion-laughs", "100-MB", "deep-json", "deep-yaml", "100k-list", "binary", "5000-digit-int", "number-as-section"],
)
def test_a_hostile_config_file_is_one_line_in_bounded_memory_and_time(tmp_path: Path, history: Path, name: str, make: Callable[[Path], None], fragment: str) -> None:
    config = tmp_path / name
    make(config)
    before = snapshot(tmp_path)
    outcome = run_cli(["train", str(history), "--out", str(tmp_path / "m"), "--config", str(config)], timeout_s=40)
    line = assert_one_line_error(outcome, repr(str(config)), fragment)
    assert len(line) < 400 and snapshot(tmp_path) == before


def test_a_config_that_never_ends_is_refused_by_size() -> None:
    code = "from anomaly.core.config import DetectorConfig\nDetectorConfig.from_file('/dev/zero')"
    outcome = run_python(code, memory_mb=2048, timeout_s=40)
    assert outcome.returncode == 1 and "ConfigError: config file '/dev/zero' is larger than" in outcome.stderr, outcome.stderr[-2000:]


# -- item 8: --out --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "detect"])
@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_out_folder_that_cannot_be_one_is_refused_before_any_work(
    tmp_path: Path, history: Path, capsys: pytest.CaptureFixture[str], command: str, where: str
) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("keep me\n")
    out = blocker if where == "file" else blocker / "sub"
    before = snapshot(tmp_path)
    missing = tmp_path / "no-such-data.csv"  # refused before the data is even read
    outcome = cli([command, str(missing), "--out", str(out), "--set", "training.epochs=1"], capsys)
    assert_one_line_error(outcome, "--out", repr(str(out)))
    assert snapshot(tmp_path) == before
