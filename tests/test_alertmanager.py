"""Alerts to a real Alertmanager: firing while open, the same alert after a restart, resolved when over.

The end-to-end case trains a tiny model, scores data with an injected
incident and reports after each score run with an Alertmanager started on
loopback by the test (its own configuration and storage, clustering off); a
report run in a separate process stands for a restart. What Alertmanager
holds is read back from its v2 API. The sender's step from the ledger to
the alerts sent is pinned down on hand-made ledgers; escalations and
resolutions also reach the webhook and the Prefect events; one score flow
run checks the flows' ``alertmanager`` and ``pushgateway`` parameters.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

import flows.report
from anomaly.core.events import ALERT_COLUMNS, alert_id
from anomaly.errors import ConfigError, DataError
from anomaly.evaluation.synthetic import clean_metrics, inject
from anomaly.io.store import RawStore
from anomaly.io.catalogue import Series, common_labels
from anomaly.ops.alertmanager import ALERTNAME, Alertmanager, SenderState, alert_labels, follow, load_state, payload, sync
from anomaly.ops.alerts import Alert, Ledger, advance
from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.latest import read_latest
from anomaly.ops.reports import RESOLVED_ALERT, alert_payload, write_report
from anomaly.ops.workspace import STORE, Workspace
from tests import servers
from tests.conftest import CHILD_ENV, REPO, TINY, long_points
from tests.test_reports import Listener

GROUPS = {"host": ["cpu", "requests"]}
T0 = pd.Timestamp("2026-02-01 00:00", tz="UTC")
STEP = pd.Timedelta("5min")
RUNBOOKS = {"default": "https://runbooks.example.org/{model}/{metric}", "requests": "https://runbooks.example.org/requests?alert={alert_id}"}
DASHBOARD = "https://grafana.example.org/d/anomaly?var-metric={metric}&var-model={model}"
REPORTS = "https://reports.example.org/anomaly"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    series = clean_metrics(1440, metrics=("requests", "cpu"), seed=11)
    broken, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    return broken


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> tuple[Path, Path]:
    """A workspace after the first score run and its report: a trained host model, no alert yet."""
    root = tmp_path_factory.mktemp("am")
    workspace, registry = root / "ws", root / "models"
    RawStore(workspace / STORE).append(long_points(data.iloc[:864]))
    train_group(plan_groups(["cpu", "requests"], GROUPS)[0], workspace, registry, TINY, history="3D", validation="12h")
    score(workspace, registry)
    write_report(workspace, now=T0)
    return workspace, registry


def score(workspace: Path, registry: Path) -> None:
    score_groups(plan_groups(["cpu", "requests"], GROUPS), workspace, registry)


def arrive(workspace: Path, data: pd.DataFrame, start: int, stop: int) -> None:
    RawStore(workspace / STORE).append(long_points(data.iloc[start:stop]))


def held(url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds as active (resolved ones it no longer lists)."""
    answer = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'alertname="{ALERTNAME}"'}, timeout=5)
    answer.raise_for_status()
    return answer.json()


def same_time(a: str, b: str) -> bool:
    return pd.Timestamp(a) == pd.Timestamp(b)


# -- end to end against a real Alertmanager ------------------------------------------------------


def test_an_incident_fires_survives_a_restart_without_a_duplicate_and_resolves(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path
) -> None:
    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    with servers.alertmanager(tmp_path / "am") as am:
        config = {"url": am, "runbook_url": RUNBOOKS, "dashboard_url": DASHBOARD, "timeout": 5}

        # 1. The incident starts: the report's new alert fires in Alertmanager with its labels and annotations.
        arrive(workspace, data, 864, 920)
        score(workspace, base[1])
        first = write_report(workspace, now=T0 + pd.Timedelta("1h"), report_url=REPORTS, alertmanager=config)
        (alert,) = [a for a in first.document["alerts"] if a["state"] == "new"]
        assert first.delivery["alertmanager"] == {"where": am, "firing": 1, "resolved": 0, "error": None}
        (fired,) = held(am)
        assert fired["status"]["state"] == "active"
        labels = {"alertname": ALERTNAME, "metric": "requests", "model": "host", "severity": alert["severity"]}
        assert fired["labels"] == labels and same_time(fired["startsAt"], alert["start"])
        notes = fired["annotations"]
        point = {p.metric: p for p in read_latest(Workspace(workspace))}["requests"]
        assert notes["runbook_url"] == f"https://runbooks.example.org/requests?alert={alert['id']}"
        assert notes["dashboard_url"] == "https://grafana.example.org/d/anomaly?var-metric=requests&var-model=host"
        assert notes["report"] == f"{REPORTS}/{first.paths['html'].name}" == fired["generatorURL"]
        assert notes["observed"] == f"{point.value:.6g}" and notes["expected"] == f"{point.expected:.6g}"
        assert (notes["expected_lower"], notes["expected_upper"]) == (f"{point.lower:.6g}", f"{point.upper:.6g}")
        assert notes["description"].startswith(f"requests observed {point.value:.6g}, expected {point.expected:.6g} (band ")
        assert notes["summary"].startswith(f"Anomaly in requests, cpu (model host): {alert['severity']}, peak ")
        assert pd.Timestamp(fired["endsAt"]) > pd.Timestamp.now(tz="UTC") + pd.Timedelta("10min")  # renewed by each run

        # 2. A restart: a new process reads the state from disk and re-sends the still-open alert; still one alert.
        arrive(workspace, data, 920, 940)
        score(workspace, base[1])
        done = subprocess.run(
            [sys.executable, "-m", "anomaly.cli", "report", str(workspace), "--alertmanager", am],
            cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "alertmanager: 1 firing, 0 resolved" in done.stdout
        (again,) = held(am)  # one alert, not two
        assert same_time(again["startsAt"], fired["startsAt"]) and again["labels"]["metric"] == "requests"
        ledger = json.loads((workspace / "reports" / "state.json").read_text())["alerts"][alert["id"]]
        assert again["labels"]["severity"] == ledger["severity"]  # an escalation would resolve the old label set
        if ledger["severity"] == alert["severity"]:  # (this incident is critical from the start)
            assert again["fingerprint"] == fired["fingerprint"] and again["labels"] == fired["labels"]
        sent = json.loads((workspace / "reports" / "alertmanager.json").read_text())["alerts"]
        assert list(sent) == [alert["id"]] and sent[alert["id"]]["labels"] == again["labels"]
        write_report(workspace, now=T0 + pd.Timedelta("3h"), alertmanager=config)  # nothing new: a plain re-send
        (still,) = held(am)
        assert still["fingerprint"] == again["fingerprint"] and same_time(still["startsAt"], fired["startsAt"])

        # 3. The incident ends: the ledger resolves the alert and Alertmanager no longer holds it as active.
        arrive(workspace, data, 940, 1040)
        score(workspace, base[1])
        last = write_report(workspace, now=T0 + pd.Timedelta("4h"), alertmanager=config)
        assert [a["state"] for a in last.document["alerts"]] == ["resolved"]
        assert last.delivery["alertmanager"] == {"where": am, "firing": 0, "resolved": 1, "error": None}
        assert held(am) == []
        assert json.loads((workspace / "reports" / "alertmanager.json").read_text())["alerts"] == {}
        quiet = write_report(workspace, now=T0 + pd.Timedelta("5h"), alertmanager=config)
        assert quiet.delivery["alertmanager"] == {"where": am, "firing": 0, "resolved": 0, "error": None} and held(am) == []


def test_an_alertmanager_that_is_down_costs_one_line_and_the_next_run_delivers(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path) -> None:
    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    port = servers.free_port()
    started = time.monotonic()
    down = write_report(workspace, now=T0 + pd.Timedelta("1h"), alertmanager={"url": f"http://127.0.0.1:{port}", "timeout": 2})
    assert time.monotonic() - started < 30
    error = down.delivery["alertmanager"]["error"]
    assert error.startswith(f"alertmanager http://127.0.0.1:{port} unreachable: ConnectError") and "\n" not in error
    assert down.paths["html"].exists() and json.loads((workspace / "reports" / "state.json").read_text())["alerts"]  # ledger kept
    (alert,) = [a for a in down.document["alerts"] if a["state"] == "new"]
    with servers.alertmanager(tmp_path / "am") as am:
        up = write_report(workspace, now=T0 + pd.Timedelta("2h"), alertmanager=am)
        assert up.delivery["alertmanager"]["error"] is None and [a["state"] for a in up.document["alerts"]] == ["ongoing"]
        (fired,) = held(am)
        assert same_time(fired["startsAt"], alert["start"]) and fired["labels"]["metric"] == "requests"


def test_an_alertmanager_that_refuses_is_named_with_its_answer(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path) -> None:
    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    with Listener() as refusing:
        refusing.answers = [400]
        report = write_report(workspace, now=T0 + pd.Timedelta("1h"), alertmanager=refusing.url.removesuffix("/hook"))
        (request,) = refusing.received
    assert report.delivery["alertmanager"]["error"] == f"alertmanager {refusing.url.removesuffix('/hook')} refused 1 alert(s): HTTP 400"
    assert [a["labels"]["metric"] for a in request["body"]] == ["requests"]
    assert json.loads((workspace / "reports" / "alertmanager.json").read_text())["alerts"]  # kept for the next run


# -- the sender's step, on hand-made ledgers -------------------------------------------------------


def at(i: int) -> pd.Timestamp:
    return T0 + i * STEP


def rows(*items: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(items), columns=list(ALERT_COLUMNS))


def row(start: int, end: int, *, closed: bool = False, severity: str = "low", peak: float = 1.2) -> dict[str, Any]:
    return {
        "id": alert_id("cpu", at(start)), "start": at(start), "end": at(end), "metric": "cpu", "peak_score": peak, "threshold": 1.0,
        "severity": severity, "peak_time": at(end), "n_points": end - start + 1, "n_above": end - start + 1, "model": "cpu",
        "version": "000001", "onset": at(start), "closed": closed,
    }  # fmt: skip


def step(state: SenderState, ledger: Ledger, found: pd.DataFrame, now: pd.Timestamp, config: Alertmanager) -> list[dict[str, Any]]:
    """One report run's sender step (without the network): the alerts it would POST."""
    changes = advance(ledger, found, {"cpu": STEP.total_seconds()}, now)
    follow(state, ledger, {c.alert.id for c in changes if c.state == "new"}, [], config, "file:///r.html", now)
    return payload(state, config, pd.Timestamp("2026-12-01", tz="UTC"))


def test_a_firing_alert_keeps_its_labels_and_starts_at_and_an_escalation_retires_the_old_labels() -> None:
    config, ledger, state = Alertmanager("http://am:9093", ends_in=600), Ledger(), SenderState()
    (first,) = step(state, ledger, rows(row(4, 6)), at(7), config)
    assert first["labels"] == {"alertname": ALERTNAME, "metric": "cpu", "model": "cpu", "severity": "low"}
    assert (first["startsAt"], first["endsAt"]) == (at(4).isoformat(), "2026-12-01T00:10:00+00:00")
    restarted = SenderState.from_json(json.loads(json.dumps(state.to_json())), "the state")
    (again,) = step(restarted, ledger, rows(), at(8), config)
    assert again == first  # identical labels and startsAt: the same alert to Alertmanager
    firing, retired = step(restarted, ledger, rows(row(4, 9, severity="high", peak=3.0)), at(10), config)
    assert firing["labels"]["severity"] == "high" and firing["startsAt"] == first["startsAt"] and "endsAt" in firing
    assert retired["labels"] == first["labels"] and retired["endsAt"] == at(10).isoformat()
    resolved, retired_again = step(restarted, ledger, rows(row(4, 9, severity="high", peak=3.0, closed=True)), at(20), config)
    assert resolved["labels"]["severity"] == "high" and resolved["endsAt"] == (at(9) + STEP).isoformat()
    assert retired_again == retired  # not delivered yet: sent again


def test_alerts_carry_their_series_labels_for_routing_and_ours_win() -> None:
    config, ledger, state = Alertmanager("http://am:9093"), Ledger(), SenderState()
    catalogue = {"cpu": Series("cpu", "node_cpu", {"team": "checkout", "severity": "page", "alertname": "x", "__meta": "y"})}
    advance(ledger, rows(row(4, 6)), {"cpu": STEP.total_seconds()}, at(7))
    follow(state, ledger, set(), [], config, "file:///r.html", at(7), catalogue)
    (sent,) = payload(state, config, at(8))
    assert sent["labels"] == {
        "alertname": ALERTNAME, "metric": "cpu", "model": "cpu", "severity": "low",
        "team": "checkout", "exported_severity": "page", "exported_alertname": "x",
    }  # fmt: skip
    group = Alert(**{**vars(ledger.alerts[next(iter(ledger.alerts))]), "metrics": ["cpu", "mem"]})
    both = {**catalogue, "mem": Series("mem", "node_mem", {"team": "checkout", "instance": "b"})}
    assert alert_labels(group, common_labels(both, group.metrics))["team"] == "checkout", "labels the group's series share"
    assert "instance" not in alert_labels(group, common_labels(both, group.metrics))
    assert alert_labels(group) == {"alertname": ALERTNAME, "metric": "cpu", "model": "cpu", "severity": "low"}, "no catalogue: as before"


def test_an_alert_closed_before_its_first_report_is_sent_once_resolved_and_one_closed_before_the_sender_knew_it_never() -> None:
    config, ledger, state = Alertmanager("http://am:9093"), Ledger(), SenderState()
    (short,) = step(state, ledger, rows(row(4, 6, closed=True)), at(20), config)
    assert short["endsAt"] == (at(6) + STEP).isoformat() and short["startsAt"] == at(4).isoformat()
    other, fresh = Ledger(), SenderState()
    advance(other, rows(row(4, 6, closed=True)), {"cpu": 300.0}, at(20))  # reported before Alertmanager was configured
    assert step(fresh, other, rows(), at(21), config) == []


def test_a_delivered_resolution_is_forgotten_and_not_sent_again(tmp_path: Path) -> None:
    space, ledger = Workspace(tmp_path), Ledger()
    with Listener() as am:
        config = Alertmanager(am.url.removesuffix("/hook"))
        advance(ledger, rows(row(4, 6)), {"cpu": 300.0}, at(7))
        assert sync(space, ledger, set(), [], config, "file:///r.html", at(7))["firing"] == 1
        advance(ledger, rows(row(4, 8, closed=True)), {"cpu": 300.0}, at(10))
        assert sync(space, ledger, set(), [], config, "file:///r.html", at(10)) == {"where": config.where(), "firing": 0, "resolved": 1, "error": None}
        assert sync(space, ledger, set(), [], config, "file:///r.html", at(11))["resolved"] == 0
        bodies = [r["body"] for r in am.received]
    assert [len(b) for b in bodies] == [1, 1] and bodies[1][0]["endsAt"] == (at(8) + STEP).isoformat()
    assert {k.lower(): v for k, v in am.received[0]["headers"].items()}["content-type"] == "application/json"
    assert load_state(space).alerts == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://am:9093", "alertmanager url must be http(s)://host[:port], got 'ftp://am:9093'"),
        ("http://am:port", "alertmanager url has a bad port: 'http://am:port'"),
        ({"url": "http://am", "timeout": 0}, "alertmanager timeout must be > 0 and at most 300 seconds, got 0"),
        ({"url": "http://am", "ends_in": -5}, "alertmanager ends_in must be a number of seconds > 0 or null, got -5"),
        ({"url": "http://am", "runbook_url": "https://wiki/{host}"}, "alertmanager runbook_url for 'default' uses ['host']; it may use"),
        ({"url": "http://am", "dashboard_url": ["x"]}, "alertmanager dashboard_url must be a URL template or a mapping of metric/model"),
        ({"address": "http://am"}, "alertmanager needs a url and takes timeout, ends_in, runbook_url, dashboard_url; got keys ['address']"),
    ],
)
def test_a_bad_alertmanager_setting_is_refused_by_name_before_the_report_changes_anything(spec: Any, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        write_report(tmp_path / "ws", alertmanager=spec)
    assert str(refused.value).startswith(message)
    assert not (tmp_path / "ws" / "reports" / "state.json").exists()


def test_a_damaged_sender_state_is_named_left_as_it_is_and_the_ledger_still_moves(tmp_path: Path) -> None:
    space, ledger = Workspace(tmp_path), Ledger()
    space.reports_dir.mkdir(parents=True)
    space.alertmanager_state_path.write_text('{"format_version": 1, "alerts": []}')
    with pytest.raises(DataError, match="alertmanager.json' is not an Alertmanager sender state"):
        load_state(space)
    advance(ledger, rows(row(4, 6)), {"cpu": 300.0}, at(7))
    outcome = sync(space, ledger, set(), [], Alertmanager("http://127.0.0.1:9"), "file:///r.html", at(7))
    assert outcome["firing"] == 0 and outcome["error"].startswith("nothing sent: ") and "not an Alertmanager sender state" in outcome["error"]
    assert space.alertmanager_state_path.read_text() == '{"format_version": 1, "alerts": []}'


def test_a_firing_alert_ends_after_its_start_even_when_the_clock_is_behind_the_data() -> None:
    config, ledger, state = Alertmanager("http://am:9093", ends_in=600), Ledger(), SenderState()
    advance(ledger, rows(row(4, 6)), {"cpu": 300.0}, at(7))
    follow(state, ledger, set(), [], config, "file:///r.html", at(7))
    (sent,) = payload(state, config, at(0))  # the clock reads 20 minutes before the alert started
    assert pd.Timestamp(sent["endsAt"]) == at(4) + pd.Timedelta("10min") > pd.Timestamp(sent["startsAt"])


# -- escalations and resolutions on the webhook and as Prefect events ------------------------------


def test_escalations_and_resolutions_go_to_the_webhook_and_as_prefect_events(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(flows.report, "emit_event", lambda **event: emitted.append(event))
    documents = []
    with Listener() as hook:
        for hour, (start, stop) in enumerate([(864, 920), (920, 940), (940, 1040)], 1):
            arrive(workspace, data, start, stop)
            score(workspace, base[1])
            report = write_report(workspace, now=T0 + pd.Timedelta(hours=hour), webhook=hook.url, announce=flows.report.announce)
            documents.append(report.document)
        bodies = [r["body"] for r in hook.received]
    (alert,) = [a for a in documents[0]["alerts"] if a["state"] == "new"]
    escalations = [a for doc in documents for a in doc["alerts"] if a["escalated_from"]]
    expected = [f"{alert['id']}:new", *[f"{a['id']}:escalated:{a['severity']}" for a in escalations], f"{alert['id']}:resolved"]
    assert [b["key"] for b in bodies] == expected
    assert [e["event"] for e in emitted] == [b["event"] for b in bodies]
    resolved, event = bodies[-1], emitted[-1]
    assert resolved["event"] == event["event"] == RESOLVED_ALERT == "anomaly.alert.resolved"
    assert resolved["text"].startswith("[RESOLVED] anomaly in requests, cpu from ") and not resolved["alert"]["open"]
    assert event["resource"]["prefect.resource.id"] == f"anomaly.alert.{alert['id']}" and event["payload"]["metric"] == "requests"


def test_the_report_webhook_and_alertmanager_carry_the_series_labels_and_a_damaged_catalogue_sends_nothing(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path
) -> None:
    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    store = RawStore(workspace / STORE)
    store.record_series([Series("requests", "http_requests", {"team": "checkout", "env": "prod"}), Series("cpu", "node_cpu", {"team": "checkout"})])
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    with Listener() as hook, Listener() as am:
        report = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=hook.url, alertmanager=am.url.removesuffix("/hook"))
        (sent,) = [r["body"] for r in am.received]
        (posted,) = [r["body"] for r in hook.received]
    (alert,) = report.new_alerts
    assert alert["labels"] == {"team": "checkout"}, "the labels both series of the host model share"
    assert posted["labels"] == {"team": "checkout"} and posted["alert"]["labels"] == {"team": "checkout"}
    assert sent[0]["labels"] == {"alertname": ALERTNAME, "metric": "requests", "model": "host", "severity": alert["severity"], "team": "checkout"}
    assert "- labels: team=checkout" in report.markdown and report.document["labels_problem"] is None

    store.catalogue_path.write_text('{"format_version": 1, "series": {"cpu": "node_cpu"}}')
    with Listener() as am:
        later = write_report(workspace, now=T0 + pd.Timedelta("2h"), alertmanager=am.url.removesuffix("/hook"))
        assert am.received == [], "without their labels the alerts would be routed elsewhere"
    problem = later.document["labels_problem"]
    assert "series.json' is not a series catalogue: series 'cpu' has no name: 'node_cpu'" in problem and "\n" not in problem
    assert later.delivery["alertmanager"]["error"] == f"nothing sent: {problem}"
    assert f"**labels not read**, nothing sent to Alertmanager: {problem}" in later.markdown
    assert store.catalogue_path.read_text() == '{"format_version": 1, "series": {"cpu": "node_cpu"}}', "left as it was"


def test_an_escalation_payload_names_the_rise_and_has_a_key_of_its_own() -> None:
    alert = {
        "id": "cpu-1", "state": "ongoing", "escalated_from": "medium", "severity": "critical", "metrics": ["cpu"], "model": "cpu",
        "start": at(4).isoformat(), "end": at(9).isoformat(), "peak_ratio": 4.5, "peak_score": 4.5,
    }  # fmt: skip
    sent = alert_payload(alert, "file:///r.html")
    assert (sent["key"], sent["event"]) == ("cpu-1:escalated:critical", "anomaly.alert.escalated")
    assert sent["text"] == f"[CRITICAL] anomaly in cpu since {at(4):%Y-%m-%d %H:%M} UTC rose from medium: peak 4.50× threshold (model cpu). Report: file:///r.html"


# -- the flows' parameters: one score flow run ------------------------------------------------------


def test_the_score_flow_sends_to_alertmanager_and_pushes_to_the_pushgateway(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, prefect_harness: None
) -> None:
    from flows.score import push_task, score_flow

    workspace = Path(shutil.copytree(base[0], tmp_path / "ws"))
    arrive(workspace, data, 864, 920)
    with servers.alertmanager(tmp_path / "am") as am, servers.pushgateway(tmp_path / "gw") as gateway:
        state = score_flow(
            str(workspace), str(base[1]), GROUPS, alertmanager={"url": am, "runbook_url": RUNBOOKS}, pushgateway={"url": gateway, "job": "flowtest"},
            return_state=True,
        )  # fmt: skip
        assert state.is_completed(), state.message
        (fired,) = held(am)
        assert fired["labels"]["metric"] == "requests" and fired["annotations"]["runbook_url"].startswith("https://runbooks.example.org/requests?alert=")
        exposed = httpx.get(f"{gateway}/metrics", timeout=5).text
        point = {p.metric: p for p in read_latest(Workspace(workspace))}["requests"]
        line = f'anomaly_expected_upper{{instance="",job="flowtest",metric="requests",model="host",version="000001"}}'
        assert any(row.startswith(line) and float(row.split()[-1]) == point.upper for row in exposed.splitlines())
        active = 'anomaly_alert_active{instance="",job="flowtest",metric="requests",model="host",version="000001"} 1'
        assert active in exposed  # pushed after the report: the alert it opened is active
    # a push that cannot go out is the run's error, in one line, never an exception that loses the run's results
    down = push_task.fn(str(workspace), f"http://127.0.0.1:{servers.free_port()}")
    assert down["pushed"] == 0 and "unreachable" in down["error"]
    refused = push_task.fn(str(workspace), "gateway:9091")
    assert refused["error"] == "pushgateway setting refused: pushgateway url must be http(s)://host[:port], got 'gateway:9091'"


def test_the_commented_settings_in_prefect_yaml_are_valid_when_uncommented() -> None:
    from anomaly.ops.exporter import Pushgateway

    lines = (REPO / "prefect.yaml").read_text().splitlines()
    found = {}
    for line in lines:
        text = line.strip().removeprefix("# ")
        for name in ("alertmanager", "pushgateway"):
            if text.startswith(f"{name}: "):
                found[name] = yaml.safe_load(text)[name]
    assert sorted(found) == ["alertmanager", "pushgateway"]
    manager = Alertmanager.from_spec(found["alertmanager"])
    assert manager is not None and manager.endpoint == "http://alertmanager:9093/api/v2/alerts"
    assert Pushgateway.from_spec(found["pushgateway"]) == Pushgateway("http://pushgateway:9091", "anomaly")
