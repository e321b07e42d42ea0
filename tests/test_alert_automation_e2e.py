"""Alerts reach people through Prefect automations: a real server, real webhook calls, nothing mocked.

``report_flow`` emits one ``anomaly.alert.new`` event per new alert, and
users are to route alerts with automations on that event (DESIGN.md §4).
This test runs that chain end to end on the open-source server:

1. an HTTP listener on loopback records every request it gets;
2. ``prefect server start`` runs on loopback with a home of its own (its
   ReactiveTriggers and Actions services on, as they are by default);
3. a child process saves, for each of three routes, a
   ``CustomWebhookNotificationBlock`` aimed at the listener and an
   automation: an ``EventTrigger`` on ``anomaly.alert.*`` (``all``; only
   ``high``/``critical`` alerts for ``urgent``; only ``low``/``medium`` for
   ``minor``) with a ``SendNotification`` whose text is templated from the
   event; and the automation the product ships (``flows/automations.yaml``)
   is created twice by its command, ``python -m flows.automations create
   --block custom-webhook/anomaly-shipped``, aimed at a fourth block;
4. a workspace gets real new alerts: a tiny model is trained, a clean half
   day scored (a false alarm, ``medium``), then a day with a level shift
   (``critical``);
5. ``report_flow`` runs against the server, in a child process.

The listener must receive one POST per new alert on ``all`` and on the one
of ``urgent``/``minor`` its severity picks, none on the other, and one from the shipped automation
(created once, not twice), each carrying
the alert's id, metric, severity, score and report link exactly as the
report's JSON document and the flow's result give them; the server must
hold one ``anomaly.alert.new`` event per alert. Then a second
``report_flow`` run, with nothing new, must announce nothing: no event and
no request in a quiet period. An alert is announced once.

As in ``test_schedule_e2e`` (both use ``tests/prefect_server.py``), the test process's
own Prefect settings are left alone: the server and the clients are child
processes with every inherited ``PREFECT_*`` variable removed, and the API
is read with plain ``httpx``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.workspace import STORE
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics, inject
from tests.conftest import REPO, TINY, long_points
from tests.prefect_server import Server, child_env, running_server, stop, tail

#: Server settings: the two services this test needs, stated although they are on by default;
#: the scheduler and late-runs loops off (nothing here is scheduled, and the machine has 2 cores).
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "true",  # ReactiveTriggers and Actions
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "true",  # so /events/filter shows what arrived
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
CLIENT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

CHILD_TIMEOUT_S = 180.0
#: How long the listener may wait for the automation's POST after the flow returned.
DELIVERY_TIMEOUT_S = 60.0
#: How long the listener must stay quiet after a report with nothing new.
QUIET_S = 8.0
#: Where reports would be served; the alert's link points under it.
REPORT_URL = "https://reports.example.test/anomaly"

#: The report's runbook links (no dashboard): they reach the events' payload and the shipped automation's text.
LINKS = {"runbook_url": "https://runbooks.example.test/{model}/{metric}"}

#: Where each route's notifications go (under the listener's ``/hooks/``) and the severities it takes.
ROUTES: dict[str, list[str] | None] = {"all": None, "urgent": ["high", "critical"], "minor": ["low", "medium"]}

#: What a user runs once per route (the README snippet, with the listener as the webhook).
#: ``CustomWebhookNotificationBlock`` may call private and loopback URLs: its SSRF check
#: (``prefect.utilities.urls.validate_restricted_url``) runs only when the block's
#: ``allow_private_urls`` is false, and that field defaults to true in Prefect 3.8.8. It is set
#: here anyway so the test does not lean on the default; no server setting is involved.
SETUP_AUTOMATIONS = """
import json, sys
from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.notifications import CustomWebhookNotificationBlock

base, routes = sys.argv[1], json.loads(sys.argv[2])
created = {}
for route, severities in routes.items():
    match = {"prefect.resource.id": "anomaly.alert.*"}
    if severities:
        match["anomaly.severity"] = severities  # a list matches any of its values
    hook = CustomWebhookNotificationBlock(
        name=f"anomaly-{route}",
        url=f"{base}/{route}",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "{{name}}"},
        allow_private_urls=True,
    )
    block_id = hook.save(f"anomaly-{route}", overwrite=True)
    automation = Automation(
        name=f"anomaly-alerts-{route}",
        trigger=EventTrigger(
            expect={"anomaly.alert.new"},
            match=match,
            for_each={"prefect.resource.id"},  # one notification per alert, however many arrive at once
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="[{{ event.payload.severity | upper }}] anomaly in {{ event.payload.metrics | join(', ') }}",
                body=(
                    "alert={{ event.resource.id }} severity={{ event.payload.severity }} "
                    "metric={{ event.payload.metric }} score={{ event.payload.score }} "
                    "report={{ event.payload.report }}"
                ),
            )
        ],
    ).create()
    created[route] = str(automation.id)
shipped = CustomWebhookNotificationBlock(
    name="anomaly-shipped",
    url=f"{base}/shipped", json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "{{name}}"}, allow_private_urls=True
)
shipped.save("anomaly-shipped", overwrite=True)
print(json.dumps({"routes": created, "shipped_block": f"{shipped.get_block_type_slug()}/anomaly-shipped"}))
"""

#: The shipped automations' command, as a user runs it (``python -m flows.automations ...``).
CREATE_SHIPPED = "import runpy; runpy.run_module('flows.automations', run_name='__main__', alter_sys=True)"

#: A report runner against the server: one ``report_flow`` run per line read, its result printed as JSON.
#: One process for both runs, as a served runner would be, and one import of torch instead of two.
RUN_REPORTS = """
import json, sys
from flows.report import report_flow

for _ in sys.stdin:
    print("RESULT " + json.dumps(report_flow(sys.argv[1], report_url=sys.argv[2], links=json.loads(sys.argv[3]))), flush=True)
"""


# -- the webhook listener --------------------------------------------------------------------


@dataclass
class Listener:
    """An HTTP server on loopback that answers 200 and keeps every request it got."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def listener() -> Iterator[Listener]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with record.lock:
                record.requests.append(
                    {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_GET = _record

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request on stderr
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    record = Listener(url=f"http://127.0.0.1:{httpd.server_address[1]}/hooks")
    thread = threading.Thread(target=httpd.serve_forever, name="webhook-listener", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


# -- the server ---------------------------------------------------------------------------


@pytest.fixture
def alert_server(tmp_path: Path) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port, triggers and actions on, a throwaway home."""
    with running_server(tmp_path, SERVER_ENV) as server:
        yield server


# -- helpers ------------------------------------------------------------------------------


def _workspace_with_new_alerts(root: Path) -> Path:
    """A workspace whose next report has new alerts: two score runs of a tiny model, the second over a level shift.

    A ``requests`` model is trained on three days (the last half day held
    out) and the held-out half day is scored; a day with a level shift in
    it then arrives and is scored too. Training is seeded, so the report
    always finds the same two alerts: a ``medium`` one in the half day (a
    tiny model's false alarm) and a ``critical`` one over the shift. One
    per severity filter of :data:`ROUTES` beyond ``all``.
    """
    workspace, registry = root / "ws", root / "models"
    series = clean_metrics(1152, metrics=("requests",), seed=11)
    broken, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    RawStore(workspace / STORE).append(long_points(series.iloc[:864]))
    groups = plan_groups(["requests"])
    train_group(groups[0], workspace, registry, TINY, history="3D", validation="12h")
    assert [r["status"] for r in score_groups(groups, workspace, registry)] == ["scored"]
    RawStore(workspace / STORE).append(long_points(broken.iloc[864:1000]))
    scored = score_groups(groups, workspace, registry)
    assert [(r["status"], r["events"] > 0) for r in scored] == [("scored", True)], scored
    return workspace


def _run_child(code: str, args: list[str], env: dict[str, str], log: Path, what: str) -> str:
    """Run ``python -c code *args`` from the repository; its stdout, or a failure with both streams."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish in {CHILD_TIMEOUT_S:.0f} s:\n{exc.stdout}\n{exc.stderr}")
    log.write_text(f"$ {what}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{what} exited with {proc.returncode}:\n{proc.stdout}\n{tail(log)}")
    return proc.stdout


class ReportRunner:
    """The :data:`RUN_REPORTS` child: :meth:`run` asks it for one report and returns the flow's result."""

    def __init__(self, workspace: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:  # Prefect logs to stderr: a file, no pipe to fill
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RUN_REPORTS, str(workspace), REPORT_URL, json.dumps(LINKS)],
                cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="report-runner-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("report\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pytest.fail(f"report_flow's process exited with {self.proc.wait(10)}:\n{tail(self.log)}")
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        printed = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"report_flow's process exited with {self.proc.wait(10)}:\n{''.join(printed)}\n{tail(self.log)}")
            if line.startswith("RESULT "):
                return json.loads(line.removeprefix("RESULT "))
            printed.append(line)
        pytest.fail(f"report_flow did not finish in {CHILD_TIMEOUT_S:.0f} s:\n{''.join(printed)}\n{tail(self.log)}")

    def close(self) -> None:
        """End of input ends the loop; a child that does not leave is stopped like the server."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def _report_runner(workspace: Path, env: dict[str, str], log: Path) -> Iterator[ReportRunner]:
    runner = ReportRunner(workspace, env, log)
    try:
        yield runner
    finally:
        runner.close()


def _events(server: Server, *prefixes: str) -> list[dict[str, Any]]:
    """The events the server has stored whose names start with one of ``prefixes``."""
    with server.api() as http:
        response = http.post("/events/filter", json={"filter": {"event": {"prefix": list(prefixes)}}, "limit": 50})
        response.raise_for_status()
        return response.json()["events"]


def _wait_for(read: Callable[[], list[dict[str, Any]]], count: int, timeout_s: float) -> list[dict[str, Any]]:
    """``read()`` once it returns at least ``count`` items, or what it returns at the deadline."""
    deadline = time.monotonic() + timeout_s
    items = read()
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.25)
        items = read()
    return items


# -- the test -------------------------------------------------------------------------------


def test_automations_post_each_new_alert_to_webhooks_once(alert_server: Server, listener: Listener, tmp_path: Path) -> None:
    client_home = tmp_path / "client-home"
    client_home.mkdir()
    env = child_env(client_home, {**CLIENT_ENV, "PREFECT_API_URL": alert_server.url})

    def diagnosis() -> str:
        """The alert and automation events the server holds (an action's say why it failed), and its log."""
        try:
            seen = "\n".join(
                f"{e['event']} {e['resource'].get('prefect.resource.id')} {json.dumps(e['payload'])[:300]}"
                for e in _events(alert_server, "anomaly.", "prefect.automation.")
            )
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            seen = f"<unreadable: {exc!r}>"
        return f"\n--- events on the server ---\n{seen}\n--- server log ({alert_server.log}) ---\n{tail(alert_server.log, 40)}"

    # The report runner imports while the automations are set up and the workspace is built.
    with _report_runner(tmp_path / "ws", env, tmp_path / "report-runner.log") as runner:
        setup = json.loads(
            _run_child(SETUP_AUTOMATIONS, [listener.url, json.dumps(ROUTES)], env, tmp_path / "setup.log", "automation setup")
        )
        created = setup["routes"]
        # The shipped automation, created twice by its command: the second run replaces it, never duplicates it.
        shipped = [
            _run_child(CREATE_SHIPPED, ["create", "--block", setup["shipped_block"]], env, tmp_path / f"shipped-{i}.log", "flows.automations create")
            for i in range(2)
        ]
        assert shipped[0] == shipped[1] and shipped[0].startswith("automation 'anomaly-alerts': "), shipped
        shipped_id = shipped[0].split(": ")[1].strip()
        with alert_server.api() as http:
            named = http.post("/automations/filter", json={"automations": {"name": {"any_": ["anomaly-alerts"]}}})
            named.raise_for_status()
            assert [a["id"] for a in named.json()] == [shipped_id], named.json()
            assert sorted(named.json()[0]["trigger"]["expect"]) == ["anomaly.alert.escalated", "anomaly.alert.new", "anomaly.alert.resolved"]
        with alert_server.api() as http:
            for automation_id in created.values():
                automation = http.get(f"/automations/{automation_id}")
                automation.raise_for_status()
                assert automation.json()["enabled"] is True, automation.json()
                assert [a["type"] for a in automation.json()["actions"]] == ["send-notification"], automation.json()
        assert sorted(created) == sorted(ROUTES)
        assert _workspace_with_new_alerts(tmp_path) == tmp_path / "ws"

        # 1. The report run finds the new alert(s) ...
        first = runner.run()
        document = json.loads(Path(first["paths"]["json"]).read_text())
        new = [a for a in document["alerts"] if a["state"] == "new"]
        assert first["new"] == len(new) >= 1, (first, document["alerts"])
        assert Path(first["paths"]["html"]).with_suffix(".json") == Path(first["paths"]["json"])
        link = f"{REPORT_URL}/{Path(first['paths']['html']).name}"
        assert first["delivery"]["link"] == link
        expected = {  # route -> ids of the alerts it must announce
            route: sorted(a["id"] for a in new if severities is None or a["severity"] in severities)
            for route, severities in ROUTES.items()
        }
        assert expected["urgent"] and expected["minor"], f"each filter should have an alert to take: {[a['severity'] for a in new]}"

        # ... and the automations POST one notification per alert and matching route, and the shipped one per alert.
        total = sum(map(len, expected.values())) + len(new)
        received = _wait_for(listener.received, total, DELIVERY_TIMEOUT_S)
        assert len(received) >= total, (
            f"the listener got {len(received)} request(s) in {DELIVERY_TIMEOUT_S:.0f} s, expected {total}: "
            f"{[(r['path'], r['body']) for r in received]}{diagnosis()}"
        )
        by_route: dict[str, dict[str, dict[str, Any]]] = {route: {} for route in ROUTES}
        from_shipped: list[dict[str, Any]] = []
        for request in received:
            assert request["method"] == "POST", request
            assert request["headers"].get("content-type") == "application/json", request["headers"]
            assert request["headers"].get("user-agent") == "Prefect Notifications", request["headers"]
            route = request["path"].removeprefix("/hooks/")
            sent = json.loads(request["body"])
            if route == "shipped":
                from_shipped.append(sent)
                continue
            assert route in ROUTES, request
            assert sent["source"] == f"anomaly-{route}", sent
            alert_id = sent["body"].split()[0].removeprefix("alert=anomaly.alert.")
            assert alert_id not in by_route[route], f"alert {alert_id} announced twice on {route}"
            by_route[route][alert_id] = sent
        assert {route: sorted(sent) for route, sent in by_route.items()} == expected, [a["severity"] for a in new]
        for alert in new:
            metric = alert["metrics"][0] if alert["metrics"] else alert["model"]
            for route, ids in expected.items():
                if alert["id"] in ids:
                    sent = by_route[route][alert["id"]]
                    assert sent["body"] == (
                        f"alert=anomaly.alert.{alert['id']} severity={alert['severity']} "
                        f"metric={metric} score={alert['peak_score']} report={link}"
                    ), sent
                    assert sent["subject"] == f"[{alert['severity'].upper()}] anomaly in {', '.join(alert['metrics'])}", sent

        # The shipped automation (flows/automations.yaml) says what happened to each alert, once.
        assert sorted(from_shipped, key=lambda sent: sent["body"]) == sorted(
            (
                {
                    "source": "anomaly-shipped",
                    "subject": f"[{a['severity'].upper()}] anomaly.alert.new: anomaly in {', '.join(a['metrics'])}",
                    "body": (
                        f"anomaly.alert.new: {a['severity']} anomaly in {a['metrics'][0] if a['metrics'] else a['model']} "
                        f"(model {a['model']}), peak score {a['peak_score']} against threshold {a['threshold']}, "
                        f"from {a['start']} to {a['end']}. Report: {link} Runbook: https://runbooks.example.test/{a['model']}/{a['metrics'][0]}"
                    ),
                }
                for a in new
            ),
            key=lambda sent: sent["body"],
        ), from_shipped

        # The server holds one event per new alert, with the labels automations filter on.
        events = _wait_for(lambda: _events(alert_server, "anomaly.alert."), len(new), DELIVERY_TIMEOUT_S)
        by_alert = {e["resource"]["prefect.resource.id"].removeprefix("anomaly.alert."): e for e in events}
        assert len(events) == len(new) and sorted(by_alert) == sorted(a["id"] for a in new), events
        for alert in new:
            event = by_alert[alert["id"]]
            assert event["event"] == "anomaly.alert.new", event
            assert event["resource"]["anomaly.severity"] == alert["severity"], event
            assert event["resource"]["anomaly.model"] == alert["model"], event
            assert event["payload"]["score"] == alert["peak_score"] and event["payload"]["report"] == link, event
            assert event["payload"]["links"] == alert["links"] == {"runbook": f"https://runbooks.example.test/{alert['model']}/{alert['metrics'][0]}"}

        # 2. A report with nothing new emits nothing and announces nothing: an alert is announced once.
        second = runner.run()
        assert second["new"] == 0 and second["counts"]["new"] == {}, second
        time.sleep(QUIET_S)
        later = listener.received()
        assert len(later) == total, f"announced again: {[(r['path'], r['body']) for r in later[total:]]}{diagnosis()}"
        assert len(_events(alert_server, "anomaly.alert.")) == len(new), diagnosis()
