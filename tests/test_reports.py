"""Alert reports from real score runs: content, the three formats, de-duplication and webhook delivery.

A tiny model of two metrics is trained once; an incident is injected into
the data that arrives later, and score runs are followed by report runs the
way the scheduled flows run them. The reports are read back as a person and
a machine would read them.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pandas as pd
import pytest

from anomaly.errors import ConfigError
from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.workspace import RUNS, STORE
from anomaly.ops.reports import SCHEMA_PATH, Report, write_report
from anomaly.ops.workspace import REPORTS, STATE
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics, inject
from anomaly.ops.webhooks import Webhook, post
from tests.conftest import TINY
from tests.conftest import long_points

GROUPS = {"host": ["cpu", "requests"], "disk": ["disk"]}  # disk has no model: it cannot be scored
T0 = pd.Timestamp("2026-02-01 00:00", tz="UTC")
SCHEMA = json.loads(SCHEMA_PATH.read_text())
#: The lifecycle's report links: a default runbook, and a dashboard for requests only.
LINKS = {
    "runbook_url": "https://runbooks.example.org/{model}/{metric}",
    "dashboard_url": {"requests": "https://grafana.example.org/d/anomaly?var-metric={metric}&alert={alert_id}&sev={severity}"},
}
#: The expected range's colour in the event plots (plotting.BAND at BAND_ALPHA over white), as 0–255 RGB.
BAND_RGB = (255 - 0.3 * (255 - 0x56), 255 - 0.3 * (255 - 0xB4), 255 - 0.3 * (255 - 0xE9))


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    series = clean_metrics(1440, metrics=("requests", "cpu"), seed=11)
    broken, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    return broken.assign(disk=1.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> tuple[Path, Path]:
    """A workspace after the first score run and its report: a trained host model, disk without one."""
    root = tmp_path_factory.mktemp("reports")
    workspace, registry = root / "ws", root / "models"
    RawStore(workspace / STORE).append(long_points(data.iloc[:864]))
    train_group(plan_groups(["cpu", "requests"], GROUPS)[0], workspace, registry, TINY, history="3D", validation="12h")
    score(workspace, registry)
    write_report(workspace, now=T0)
    return workspace, registry


def score(workspace: Path, registry: Path) -> list[dict[str, Any]]:
    return score_groups(plan_groups(["cpu", "disk", "requests"], GROUPS), workspace, registry)


def arrive(workspace: Path, data: pd.DataFrame, start: int, stop: int) -> None:
    RawStore(workspace / STORE).append(long_points(data.iloc[start:stop]))


def copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory, base: tuple[Path, Path], data: pd.DataFrame) -> list[Report]:
    """Three score-and-report runs through the incident (points 900–960), then a quiet one."""
    workspace = copy(base[0], tmp_path_factory.mktemp("life") / "ws")
    reports = []
    for hour, (start, stop) in enumerate([(864, 920), (920, 940), (940, 1040), (1040, 1040)], 1):
        arrive(workspace, data, start, stop)
        score(workspace, base[1])
        reports.append(write_report(workspace, now=T0 + pd.Timedelta(hours=hour), links=LINKS))
    return reports


def alerts(report: Report, state: str | None = None) -> list[dict[str, Any]]:
    return [a for a in report.document["alerts"] if state is None or a["state"] == state]


def test_an_incident_is_announced_once_then_listed_as_ongoing_then_resolved(lifecycle: list[Report], data: pd.DataFrame) -> None:
    new, ongoing, resolved, quiet = lifecycle
    (alert,) = alerts(new, "new")
    assert alert["metrics"][0] == "requests" and alert["model"] == "host" and alert["open"]
    assert pd.Timestamp(alert["start"]) <= data.index[900] <= pd.Timestamp(alert["end"])
    assert alert["severity"] in ("high", "critical") and alert["peak_ratio"] >= 2
    (same,) = alerts(ongoing)
    assert same["state"] == "ongoing" and same["id"] == alert["id"] and same["extended"]
    assert pd.Timestamp(same["end"]) > pd.Timestamp(alert["end"])
    (closed,) = alerts(resolved)
    assert closed["state"] == "resolved" and closed["id"] == alert["id"] and not closed["open"]
    assert pd.Timestamp(closed["end"]) >= data.index[959] - pd.Timedelta("30min")
    assert alerts(quiet) == [] and quiet.document["counts"] == {"new": {}, "ongoing": {}, "resolved": {}}


def test_the_summary_says_what_was_covered_which_versions_and_what_could_not_be_scored(lifecycle: list[Report], data: pd.DataFrame) -> None:
    doc = lifecycle[0].document
    assert doc["period"] == {
        "from": data.index[864].isoformat(), "to": data.index[919].isoformat(), "score_runs": 1, "points": 56,
    }  # fmt: skip
    assert doc["metrics_scored"] == ["cpu", "requests"] and doc["models"] == [{"model": "host", "versions": ["000001"]}]
    assert doc["not_scored"] == [
        {"model": "disk", "metrics": ["disk"], "status": "no-model", "reason": doc["not_scored"][0]["reason"], "runs": 1}
    ]
    assert "no production model 'disk'" in doc["not_scored"][0]["reason"]
    assert doc["counts"]["new"] == {alerts(lifecycle[0])[0]["severity"]: 1}
    text = lifecycle[0].markdown
    assert "**1 new alert (1 " in text and "**not scored** disk: no-model" in text
    assert f"covered {data.index[864]:%Y-%m-%d %H:%M} UTC → {data.index[919]:%Y-%m-%d %H:%M} UTC: 2 metric(s), 56 point(s)" in text


def test_each_new_alert_has_a_section_with_its_facts_contributions_and_plot(lifecycle: list[Report]) -> None:
    report = lifecycle[0]
    (alert,) = alerts(report)
    text = report.markdown
    section = text[text.index("## 1. ") :]
    assert section.startswith(f"## 1. {alert['severity'].upper()} — requests, cpu")
    assert f"peak score {alert['peak_score']:.4g}" in section and f"({alert['peak_ratio']:.2f}× threshold)" in section
    assert "model host version 000001" in section
    shares = alert["contributions"]
    assert [s["metric"] for s in shares] == ["requests", "cpu"] and shares[0]["share"] > 0.5
    assert sum(s["share"] for s in shares) == pytest.approx(1, abs=1e-3)
    html = report.paths["html"].read_text()
    images = re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 1 and len(images[0]) > 10_000
    assert f'id="alert-{alert["id"]}"' in html and "<script" not in html
    links = re.findall(r'<a class="link-(\w+)" href="(https://[^"]+)">', html)
    assert [(name, url.replace("&amp;", "&")) for name, url in links] == list(alert["links"].items())
    assert "http" not in re.sub(r'<a class="link-\w+" href="https://[^"]+">', "", html).replace("http-equiv", "")  # nothing else is a URL


def test_the_ongoing_and_resolved_reports_say_no_new_anomalies_and_list_the_alert(lifecycle: list[Report]) -> None:
    for report, title in ((lifecycle[1], "## Ongoing"), (lifecycle[2], "## Resolved")):
        assert "No new anomalies." in report.markdown and title in report.markdown
        assert "## 1. " not in report.markdown
    quiet = lifecycle[3]
    assert quiet.markdown.count("\n") < 10 and "No new anomalies." in quiet.markdown and "0 new alerts" in quiet.markdown
    assert "no points scored since the last report (1 score run(s))" in quiet.markdown and "no new data for 1 model(s): host" in quiet.markdown
    assert "<img" not in quiet.paths["html"].read_text()


def test_every_report_is_valid_json_under_its_published_schema(lifecycle: list[Report]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for report in lifecycle:
        on_disk = json.loads(report.paths["json"].read_text())
        assert on_disk == report.document
        validator.validate(on_disk)
    broken = json.loads(lifecycle[0].paths["json"].read_text())
    broken["alerts"][0]["state"] = "maybe"
    assert not validator.is_valid(broken)  # the schema constrains, it does not just accept


def test_the_same_inputs_give_the_same_report_apart_from_the_generation_time(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path
) -> None:
    workspace = copy(base[0], tmp_path / "one")
    arrive(workspace, data, 864, 940)
    score(workspace, base[1])
    other = copy(workspace, tmp_path / "two")
    first = write_report(workspace, now=T0 + pd.Timedelta("1h"))
    second = write_report(other, now=T0 + pd.Timedelta("5h"))
    assert len(alerts(first, "new")) == 1

    assert {**first.document, "generated_at": None} == {**second.document, "generated_at": None}
    assert first.markdown.split("\n", 1)[1] == second.markdown.split("\n", 1)[1]
    html_one, html_two = (r.paths["html"].read_text() for r in (first, second))
    generated = r"(Generated |Anomaly report — )\d{4}-\d\d-\d\d \d\d:\d\d UTC"  # in the title and the byline
    assert html_one != html_two and re.sub(generated, "", html_one) == re.sub(generated, "", html_two)


def test_a_failing_group_is_listed_with_its_reason(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path) -> None:
    workspace = copy(base[0], tmp_path / "ws")
    registry = copy(base[1], tmp_path / "models")
    (registry / "host" / "versions" / "000001" / "scaler.json").write_text("{}")
    arrive(workspace, data, 864, 880)
    score(workspace, registry)
    score(workspace, registry)
    report = write_report(workspace, now=T0 + pd.Timedelta("1h"))
    failed = [x for x in report.document["not_scored"] if x["model"] == "host"]
    assert failed and failed[0]["status"] == "failed" and failed[0]["runs"] == 2
    assert failed[0]["reason"].startswith("ModelFileError") and "scaler.json" in failed[0]["reason"]
    assert report.document["period"]["from"] is None and "no points scored since the last report (2 score run(s))" in report.markdown


def test_run_records_are_read_once_and_old_ones_and_old_reports_are_deleted(base: tuple[Path, Path], tmp_path: Path) -> None:
    workspace = copy(base[0], tmp_path / "ws")
    again = write_report(workspace, now=T0 + pd.Timedelta("1h"))
    assert again.document["period"]["score_runs"] == 0  # the first report already read the only record
    assert len(list((workspace / RUNS).glob("score-*.json"))) == 1
    write_report(workspace, now=pd.Timestamp.now(tz="UTC") + pd.Timedelta("40D"))
    assert list((workspace / RUNS).glob("score-*.json")) == []
    names = sorted(p.name for p in (workspace / REPORTS).glob("report-*"))
    assert len(names) == 3 and all(n.startswith(names[0].rsplit(".", 1)[0]) for n in names)  # only the newest remain
    assert json.loads((workspace / REPORTS / STATE).read_text())["processed_runs"] == []


# -- webhook --------------------------------------------------------------------------------


class Listener:
    """A loopback webhook receiver whose answers the test scripts (default 204)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.answers: list[int] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                listener.received.append({"body": json.loads(body), "headers": dict(self.headers)})
                self.send_response(listener.answers.pop(0) if listener.answers else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Listener:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a webhook that is down."""
    with Listener() as gone:
        url = gone.url
    return url


def test_a_webhook_that_is_down_keeps_the_alert_and_the_next_run_delivers_it(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, listener: Listener
) -> None:
    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    down = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook={"url": closed_port_url(), "timeout": 1, "retries": 1, "backoff": 0})
    assert down.paths["html"].exists() and len(alerts(down, "new")) == 1  # the report is written all the same
    assert down.delivery["delivered"] == 0 and down.delivery["undelivered"] == 1
    (waiting,) = json.loads((workspace / REPORTS / STATE).read_text())["outbox"]
    assert waiting["attempts"] == 1 and "ConnectError" in waiting["last_error"]

    up = write_report(workspace, now=T0 + pd.Timedelta("2h"), webhook={"url": listener.url, "headers": {"Authorization": "Bearer t0ken"}})
    assert up.delivery["delivered"] == 1 and up.delivery["undelivered"] == 0 and alerts(up, "new") == []
    (message,) = listener.received
    body, alert = message["body"], alerts(down, "new")[0]
    assert body["key"] == f"{alert['id']}:new" and body["alert"] == alert
    assert (body["metric"], body["severity"], body["score"]) == ("requests", alert["severity"], alert["peak_score"])
    assert body["report"] == down.paths["html"].resolve().as_uri() and body["report"] in body["text"]
    assert message["headers"]["Authorization"] == "Bearer t0ken"
    assert json.loads((workspace / REPORTS / STATE).read_text())["outbox"] == []
    write_report(workspace, now=T0 + pd.Timedelta("3h"), webhook=listener.url)
    assert len(listener.received) == 1  # announced once


def test_the_webhook_link_points_under_the_report_url(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, listener: Listener) -> None:
    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    report = write_report(workspace, now=T0 + pd.Timedelta("1h"), webhook=listener.url, report_url="https://reports.example.org/anomaly/")
    assert listener.received[0]["body"]["report"] == f"https://reports.example.org/anomaly/{report.paths['html'].name}"


def test_posting_retries_server_errors_but_not_client_errors(listener: Listener) -> None:
    naps: list[float] = []
    listener.answers = [503, 500]
    assert post(Webhook(listener.url, retries=2, backoff=0.5), {"n": 1}, sleep=naps.append) is None
    assert len(listener.received) == 3 and naps == [0.5, 1.0]
    listener.answers = [400]
    assert post(Webhook(listener.url, retries=2), {"n": 2}, sleep=naps.append) == "HTTP 400: "
    assert len(listener.received) == 4
    listener.answers = [500, 500, 500]
    assert post(Webhook(listener.url, retries=2, backoff=0), {"n": 3}, sleep=naps.append) == "HTTP 500: "


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://host/hook", "webhook url must start with http:// or https://, got 'ftp://host/h'…"),
        ({"url": "http://h", "timeout": 0}, "webhook timeout must be > 0 seconds, got 0.0"),
        ({"url": "http://h", "retries": -1}, "webhook retries must be an integer >= 0, got -1"),
        ({"address": "http://h"}, "webhook needs a url and takes timeout, retries, backoff, headers; got keys ['address']"),
    ],
)
def test_a_bad_webhook_setting_is_refused_by_name(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Webhook.from_spec(spec)


def test_alerts_are_announced_before_they_are_marked_reported(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path) -> None:
    """A run that dies while announcing announces again next time: at least once, never zero times."""
    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    heard: list[tuple[list[str], str]] = []

    def die(alerts: Any, link: str) -> None:
        raise RuntimeError("killed while announcing")

    with pytest.raises(RuntimeError, match="killed while announcing"):
        write_report(workspace, now=T0 + pd.Timedelta("1h"), announce=die)
    again = write_report(workspace, now=T0 + pd.Timedelta("2h"), announce=lambda alerts, link: heard.append(([a["id"] for a in alerts], link)))
    assert heard == [([a["id"] for a in alerts(again, "new")], again.paths["html"].resolve().as_uri())] and heard[0][0]
    write_report(workspace, now=T0 + pd.Timedelta("3h"), announce=lambda alerts, link: heard.append(([a["id"] for a in alerts], link)))
    assert heard[1][0] == []  # announced once


def test_event_parts_from_before_n_above_are_read_with_new_ones(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path) -> None:
    """A workspace scored by the previous version keeps its event parts; the first report after an upgrade reads both."""
    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    part = sorted((workspace / "events" / "host").glob("part-*.parquet"))[-1]  # this run's
    shifted = {"start": lambda f: f["start"] - pd.Timedelta("2D"), "end": lambda f: f["end"] - pd.Timedelta("2D")}
    old = pd.read_parquet(part).head(1).drop(columns="n_above").assign(**shifted)
    old.to_parquet(part.with_name("part-20000101T000000000000-00000000.parquet"), index=False)
    report = write_report(workspace, now=T0 + pd.Timedelta("1h"))
    found = alerts(report, "new")
    upgraded = [a for a in found if pd.Timestamp(a["start"]) < data.index[864] - pd.Timedelta("1D")]
    assert len(upgraded) == 1 and upgraded[0]["n_above"] == upgraded[0]["n_points"]
    assert any(pd.Timestamp(a["start"]) >= data.index[864] - pd.Timedelta("1D") and a["n_above"] >= 1 for a in found)


def test_only_the_most_severe_alerts_are_drawn(base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anomaly.ops.reports as reports

    monkeypatch.setattr(reports, "PLOT_LIMIT", 0)
    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    report = write_report(workspace, now=T0 + pd.Timedelta("1h"))
    html = report.paths["html"].read_text()
    assert alerts(report, "new") and "<img" not in html and "only the 0 most severe alerts of a report get a plot" in html


# -- what an on-call engineer acts on: observed against expected, the band, links, resolved at ------------


def band_pixels(png: bytes) -> int:
    """How many pixels of a plot are the expected range's colour (outside the shaded event span)."""
    import io

    import matplotlib.image
    import numpy as np

    rgb = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255
    return int((np.abs(rgb - np.array(BAND_RGB)).max(axis=-1) < 4).sum())


def test_each_alert_says_observed_against_expected_in_the_metrics_units(lifecycle: list[Report], data: pd.DataFrame) -> None:
    from anomaly.ops.workspace import Workspace

    report = lifecycle[0]
    space = Workspace(report.paths["html"].parent.parent)
    (alert,) = alerts(report)
    latest = {p["metric"]: p for p in json.loads(space.latest_path("host").read_text())["series"]}
    peak, *now = alert["observed"]
    # at the peak: the scored value and the model's reconstruction there, with the version's band around it
    assert peak["when"] == "peak" and peak["metric"] == "requests"
    scores = space.read_scores("host", pd.Timestamp(peak["at"]), pd.Timestamp(peak["at"]))
    assert peak["at"] == alert["peak_time"] and len(scores) == 1
    assert peak["value"] == pytest.approx(scores["requests"].iloc[0]) == pytest.approx(data.loc[pd.Timestamp(peak["at"]), "requests"])
    assert peak["expected"] == pytest.approx(scores["reconstruction_requests"].iloc[0])
    band = latest["requests"]["band"]
    assert band > 0 and (peak["lower"], peak["upper"]) == pytest.approx((peak["expected"] - band, peak["expected"] + band))
    assert not peak["lower"] <= peak["value"] <= peak["upper"]  # it alerted because it left the expected range
    # now: each of the alert's metrics' latest scored point, the last of this report's period
    assert [(o["when"], o["metric"], o["at"]) for o in now] == [("latest", m, data.index[919].isoformat()) for m in alert["metrics"]]
    for o in now:
        assert o["value"] == pytest.approx(data.loc[data.index[919], o["metric"]])
        assert o["upper"] - o["lower"] == pytest.approx(2 * latest[o["metric"]]["band"]) and o["lower"] < o["expected"] < o["upper"]
    text = report.markdown
    when = pd.Timestamp(peak["at"]).strftime("%Y-%m-%d %H:%M UTC")
    assert (
        f"- at the peak: requests {peak['value']:,.4g} at {when}, expected {peak['expected']:,.4g} "
        f"(expected range {peak['lower']:,.4g} to {peak['upper']:,.4g})\n"
    ) in text
    assert f"- latest: cpu {now[1]['value']:,.4g} at {data.index[919]:%Y-%m-%d %H:%M} UTC, expected {now[1]['expected']:,.4g}" in text
    assert f"at the peak: requests {peak['value']:,.4g}" in report.paths["html"].read_text()


def test_each_alert_links_its_runbook_and_dashboard_and_a_resolved_one_says_when(lifecycle: list[Report]) -> None:
    new, ongoing, resolved, _ = lifecycle
    (alert,) = alerts(new)
    dashboard = f"https://grafana.example.org/d/anomaly?var-metric=requests&alert={alert['id']}&sev={alert['severity']}"
    assert alert["links"] == {"runbook": "https://runbooks.example.org/host/requests", "dashboard": dashboard}
    assert f"- runbook: https://runbooks.example.org/host/requests\n- dashboard: {dashboard}\n" in new.markdown
    assert alert["resolved_at"] is None and "resolved at" not in new.markdown
    (same,) = alerts(ongoing)
    assert same["links"] == alert["links"] and same["resolved_at"] is None
    assert f"| [runbook](https://runbooks.example.org/host/requests) · [dashboard]({dashboard}) |" in ongoing.markdown
    (closed,) = alerts(resolved)
    assert closed["resolved_at"] == (T0 + pd.Timedelta("3h")).isoformat() and closed["links"] == alert["links"]
    row = next(line for line in resolved.markdown.splitlines() if line.startswith(f"| {closed['severity']} |"))
    assert row.endswith(f"| 2026-02-01 03:00 UTC | [runbook](https://runbooks.example.org/host/requests) · [dashboard]({dashboard}) |"), row
    assert "| resolved at | links |" in resolved.markdown
    html = resolved.paths["html"].read_text()
    assert "<td>2026-02-01 03:00 UTC</td>" in html and 'class="link-dashboard" href="https://grafana.example.org/' in html


def test_the_alerts_plot_draws_the_expected_range_around_the_reconstruction(lifecycle: list[Report], data: pd.DataFrame) -> None:
    from anomaly.ops.plotting import event_plot

    html = lifecycle[0].paths["html"].read_text()
    (image,) = re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert band_pixels(base64.b64decode(image)) > 2_000
    index = data.index[:200]
    frame = pd.DataFrame({"cpu": 1.0, "reconstruction_cpu": 1.0, "anomaly_score": 0.1, "threshold": 1.0}, index=index)
    bare = event_plot(frame, ["cpu"], index[100], index[110], "t")
    banded = event_plot(frame, ["cpu"], index[100], index[110], "t", {"cpu": 0.5})
    assert band_pixels(bare) == 0 and band_pixels(banded) > 2_000
    assert banded == event_plot(frame, ["cpu"], index[100], index[110], "t", {"cpu": 0.5})  # the same bytes: reports stay comparable


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"runbook_url": "https://wiki/{host}"}, "links runbook_url for 'default' uses ['host']; it may use ['metric', 'model', 'severity', 'alert_id']"),
        ({"dashboard_url": {"cpu": "https://d/{metric"}}, "links dashboard_url for 'cpu' is not a template: "),
        ({"runbook_url": "javascript:alert({metric})"}, "links runbook_url for 'default' must be an http(s) URL template, got 'javascript:alert({metric})'"),
        ({"runbook": "https://wiki"}, "links takes runbook_url and dashboard_url; got unknown key(s) ['runbook']"),
        ("https://wiki", "links must be a mapping with runbook_url and/or dashboard_url, got 'https://wiki'"),
    ],
)
def test_a_bad_links_setting_is_refused_by_name_before_the_ledger_is_touched(
    base: tuple[Path, Path], tmp_path: Path, links: Any, message: str
) -> None:
    ledger = base[0] / REPORTS / STATE
    before = ledger.read_bytes()
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        write_report(base[0], now=T0 + pd.Timedelta("1h"), links=links)
    assert "\n" not in str(refused.value) and ledger.read_bytes() == before


def test_an_unreadable_latest_file_is_skipped_with_a_warning_naming_it(
    base: tuple[Path, Path], data: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from anomaly.ops.workspace import Workspace

    workspace = copy(base[0], tmp_path / "ws")
    arrive(workspace, data, 864, 920)
    score(workspace, base[1])
    latest = Workspace(workspace).latest_path("host")
    latest.write_text("{not json")
    with caplog.at_level("WARNING"):
        report = write_report(workspace, now=T0 + pd.Timedelta("1h"), links=LINKS)
    assert any(str(latest) in r.getMessage() and r.levelname == "WARNING" for r in caplog.records), caplog.text
    (alert,) = alerts(report, "new")
    (peak,) = alert["observed"]  # no latest points, and no band to draw: the scores still say what was observed
    assert peak["when"] == "peak" and peak["lower"] is None and "(expected range" not in report.markdown
    assert "latest: " not in report.markdown and alert["links"]["runbook"] == "https://runbooks.example.org/host/requests"
    assert json.loads((workspace / REPORTS / STATE).read_text())["alerts"][alert["id"]]["reported_at"]  # the ledger moved on
