"""The Prefect flows run for real under one test harness: ingest, train, score, report, pipeline.

Flow runs cost about a second each, so one scenario runs the flows in the
order a day of schedules would and each test checks one stage of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

import flows.report
from anomaly.ops.jobs import Group
from anomaly.ops.workspace import EVENTS, SCORES, STORE
from anomaly.ops.registry import ModelRegistry
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics, inject
from flows.ingest import ingest_flow
from flows.pipeline import fresh_demo_folder, main, pipeline_flow
from flows.report import report_flow
from flows.score import batches, score_flow
from flows.train import train_flow
from tests.conftest import TINY, read_parts

pytestmark = pytest.mark.usefixtures("prefect_harness")


def artifacts(state: Any) -> dict[str, Any]:
    """The artifacts a flow run published, by key."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    return {a.key: a for a in found}


def wide_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.rename_axis("timestamp").reset_index().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workspace taken through ingest → train → ingest → score → report, with every run's state."""
    root = tmp_path_factory.mktemp("flows")
    workspace, registry, incoming = root / "ws", root / "models", root / "incoming"
    config = root / "tiny.json"
    config.write_text(TINY.to_json())
    series = clean_metrics(1152, metrics=("requests", "cpu", "mem"), seed=5)
    broken, incident = inject(series, "level_shift", "cpu", 1000, 48, magnitude=3.0, seed=4)
    wide_csv(series.iloc[:864], incoming / "history.csv")
    # a metric with too few points to train on: its task fails, the others go on
    wide_csv(series[["cpu"]].iloc[850:864].rename(columns={"cpu": "sparse"}), incoming / "sparse.csv")
    run: dict[str, Any] = {"root": root, "workspace": workspace, "registry": registry, "incident": incident}
    run["ingest"] = ingest_flow(str(incoming), str(workspace), return_state=True)
    run["ingest_again"] = ingest_flow(str(incoming), str(workspace), return_state=True)
    run["train"] = train_flow(str(workspace), str(registry), None, str(config), "3D", "12h", return_state=True)
    wide_csv(broken.iloc[864:], incoming / "new.csv")
    run["ingest_new"] = ingest_flow(str(incoming), str(workspace), return_state=True)
    # mem's production model is damaged on disk: its scoring fails, the others go on
    with open(registry / "mem" / "versions" / "000001" / "weights.pt", "ab") as weights:
        weights.write(b"bit rot")
    run["score"] = score_flow(str(workspace), str(registry), report=False, return_state=True)
    emitted: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flows.report, "emit_event", lambda **event: emitted.append(event))
        run["report"] = report_flow(str(workspace), return_state=True)
        run["report_quiet"] = report_flow(str(workspace), return_state=True)
    run["emitted"] = emitted
    # the scheduled score run reports at its end (report=True is its default)
    run["score_and_report"] = score_flow(str(workspace), str(registry), return_state=True)
    return run


@pytest.fixture(scope="module")
def policy_day(day: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The day's workspace after a policy change: cpu's registry policy moves its threshold, and a
    deployment override (merge gap) applies to every group; neither publishes a version."""
    root = tmp_path_factory.mktemp("policy")
    workspace, registry = root / "ws", root / "models"
    shutil.copytree(day["workspace"], workspace)
    shutil.copytree(day["registry"], registry)
    models = ModelRegistry(registry)
    record = models.set_policy("cpu", models.load("cpu").detector.policy.replace(threshold={"method": "quantile", "quantile": 0.5}))
    later = wide_csv(clean_metrics(1200, metrics=("requests", "cpu"), seed=5).iloc[1152:], root / "incoming" / "later.csv")
    ingest_flow(str(later), str(workspace), return_state=True)
    state = score_flow(str(workspace), str(registry), report=False, policy={"events": {"merge_gap": 2}}, return_state=True)
    return {"workspace": workspace, "registry": registry, "record": record, "state": state}


def test_ingest_stores_every_point_once(day: dict[str, Any]) -> None:
    first, again = day["ingest"], day["ingest_again"]
    assert first.is_completed() and again.is_completed()
    assert first.result()["rows_written"] == 864 * 3 + 14
    assert again.result()["rows_written"] == 0  # a re-run over the same files adds nothing
    store = RawStore(day["workspace"] / STORE)
    assert store.metrics() == ["cpu", "mem", "requests", "sparse"]
    assert len(store.read("cpu")) == 1152  # after the second ingest
    found = artifacts(first)
    assert {"ingest-summary", "ingest-table", "ingest-link"} <= set(found)
    assert "new points: **2606** in 4 metric(s)" in found["ingest-summary"].data


def test_a_metric_that_cannot_train_fails_alone_and_the_run_says_so(day: dict[str, Any]) -> None:
    state = day["train"]
    assert state.is_failed()
    assert "1 of 4 group(s) failed: sparse: DataError: group 'sparse': no points to train on" in state.message
    registry = ModelRegistry(day["registry"])
    assert registry.names() == ["cpu", "mem", "requests"]
    assert all(registry.aliases(name) == {"production": "000001"} for name in ("cpu", "mem", "requests"))
    # the failed state still carries the groups that were trained
    assert sorted(r["group"] for r in state.result(raise_on_failure=False)) == ["cpu", "mem", "requests"]
    found = artifacts(state)
    assert "**failed** sparse: DataError" in found["train-summary"].data
    table = json.loads(found["train-table"].data)
    assert sorted(row["group"] for row in table) == ["cpu", "mem", "requests"] and all(row["promoted"] for row in table)
    assert found["train-link"].data == f"[the registry]({day['registry'].resolve().as_uri()})"


def test_score_runs_every_group_with_a_model_and_reports_those_without(day: dict[str, Any]) -> None:
    state = day["score"]
    assert state.is_failed()
    assert state.message.startswith("1 of 4 group(s) failed: mem: ModelFileError:")
    results = {r["group"]: r for r in state.result(raise_on_failure=False)}
    assert results["sparse"]["status"] == "no-model" and results["mem"]["status"] == "failed"
    assert not (day["workspace"] / SCORES / "mem").exists()
    # the held-out 12 hours plus the new day
    assert results["cpu"]["points"] == results["requests"]["points"] == 144 + 288
    scores = read_parts(day["workspace"] / SCORES / "cpu")
    assert scores["timestamp"].is_unique and len(scores) == 432
    events = read_parts(day["workspace"] / EVENTS / "cpu")
    incident = day["incident"]
    assert any(pd.Timestamp(e.start) <= incident.end and incident.start <= pd.Timestamp(e.end) for e in events.itertuples())
    found = artifacts(state)
    assert "sparse: no-model" in found["score-summary"].data
    assert "**failed** mem: ModelFileError" in found["score-summary"].data
    rows = json.loads(found["score-table"].data)
    assert len(rows) == results["cpu"]["events"] + results["requests"]["events"] and rows[0]["metric"]


def test_the_report_announces_each_new_alert_once_as_a_prefect_event(day: dict[str, Any]) -> None:
    report, quiet = day["report"].result(), day["report_quiet"].result()
    document = json.loads(Path(report["paths"]["json"]).read_text())
    new = [a for a in document["alerts"] if a["state"] == "new"]
    events = sum(r["events"] for r in day["score"].result(raise_on_failure=False) if r["status"] == "scored")
    assert 0 < report["new"] == len(new) <= events
    assert {a["model"] for a in new} <= {"cpu", "requests"} and report["counts"]["new"]
    assert quiet["new"] == 0 and "No new anomalies." in Path(quiet["paths"]["markdown"]).read_text()
    # one Prefect event per new alert, none for the quiet run
    assert [e["event"] for e in day["emitted"]] == ["anomaly.alert.new"] * len(new)
    link = Path(report["path"]).resolve().as_uri()
    for event, alert in zip(day["emitted"], new):
        assert event["resource"]["prefect.resource.id"] == f"anomaly.alert.{alert['id']}"
        assert event["resource"]["anomaly.severity"] == alert["severity"]
        payload = event["payload"]
        assert (payload["metric"], payload["severity"], payload["score"], payload["report"]) == (alert["metrics"][0], alert["severity"], alert["peak_score"], link)
    found = artifacts(day["report"])
    assert {"anomaly-report", "report-summary", "report-table", "report-link"} <= set(found)
    assert found["anomaly-report"].data.startswith(Path(report["paths"]["markdown"]).read_text())
    assert f"[Full report with plots]({link})" in found["anomaly-report"].data
    assert found["report-link"].data == f"[the HTML report]({link})"


def test_a_scheduled_score_run_ends_with_a_report(day: dict[str, Any]) -> None:
    state = day["score_and_report"]
    assert state.message.startswith("1 of 4 group(s) failed: mem: ModelFileError:")  # mem is still damaged
    reports = sorted((day["workspace"] / "reports").glob("report-*.json"))
    assert len(reports) == 3
    latest = json.loads(reports[-1].read_text())
    assert latest["alerts"] == [] or all(a["state"] != "new" for a in latest["alerts"])
    assert [x["model"] for x in latest["not_scored"]] == ["mem", "sparse"]


def test_the_pipeline_chains_the_flows_and_goes_on_past_a_failed_group(day: dict[str, Any]) -> None:
    root = day["root"]
    config = root / "tiny.json"
    incoming = root / "incoming"
    result = pipeline_flow(str(incoming), str(root / "ws2"), str(root / "models2"), None, str(config), "3D", "12h")
    assert result["ingested"]["rows_written"] > 0
    assert result["trained"]["failed"].startswith("1 of 4 group(s) failed: sparse")
    assert len(result["trained"]["results"]) == 3
    statuses = {r["group"]: r["status"] for r in result["scored"]}
    assert statuses == {"cpu": "scored", "mem": "scored", "requests": "scored", "sparse": "no-model"}
    assert Path(result["report"]["path"]).is_file()


def test_the_main_command_runs_the_pipeline_on_generated_data_and_says_where_things_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(TINY.to_json())
    out, models = tmp_path / "demo", tmp_path / "models"
    assert main(["--out", str(out), "--registry", str(models), "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    for metric in ("requests", "cpu", "latency_ms"):
        assert f"registry version: {models / metric / 'versions' / '000001'}" in printed
        assert f"scores:           {out / 'scores' / metric}/part-" in printed
    reports = sorted((out / "reports").glob("report-*.html"))
    assert len(reports) == 2 and all(f"report:           {r}" in printed for r in reports)
    assert "event quality vs the answer key, matched per metric: precision" in printed
    # the next demo run starts from a fresh workspace
    fresh_demo_folder(out)
    assert [p.name for p in out.iterdir()] == [".anomaly-demo"]


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.csv").write_text("timestamp,cpu\n")
    with pytest.raises(FileExistsError, match="is not empty and was not made by the demo"):
        fresh_demo_folder(tmp_path)
    assert (tmp_path / "precious.csv").exists()


def test_the_flows_take_label_selector_groups_beside_lists_of_metrics() -> None:
    groups = {"checkout": {"match": {"job": "checkout"}}, "host": ["cpu", "requests"]}
    for flow, required in ((train_flow, {}), (score_flow, {}), (pipeline_flow, {"source": "data.csv"})):
        assert flow.validate_parameters({"groups": groups, **required})["groups"] == groups, flow.name


def test_many_groups_are_batched_into_a_bounded_number_of_tasks() -> None:
    groups = [Group(f"m{i}", (f"m{i}",)) for i in range(1000)]
    assert batches(groups[:64]) == [[g] for g in groups[:64]]
    batched = batches(groups)
    assert len(batched) == 63 and {len(b) for b in batched[:-1]} == {16}
    assert [g for b in batched for g in b] == groups


def test_credentials_come_from_secret_blocks_named_in_the_spec() -> None:
    from prefect.blocks.system import Secret

    from flows.ingest import resolve_secrets

    Secret(value="s3cr3t").save("metrics-db-password", overwrite=True)
    spec = {"kind": "sql", "url": "postgresql://reader@db/metrics", "password_secret": "metrics-db-password"}
    assert resolve_secrets(spec) == {"kind": "sql", "url": "postgresql://reader@db/metrics", "password": "s3cr3t"}
    assert spec["password_secret"] == "metrics-db-password"  # the parameter itself is untouched
    assert resolve_secrets(["incoming/"]) == ["incoming/"]


def test_the_webhook_url_can_come_from_a_secret_block_and_never_shows() -> None:
    from prefect.blocks.system import Secret

    from anomaly.ops.webhooks import Webhook
    from flows.report import resolve_webhook

    url = "https://hooks.example.org/services/T0/B0/s3cr3t"
    Secret(value=url).save("alerts-webhook", overwrite=True)
    spec = {"url_secret": "alerts-webhook", "timeout": 2}
    assert resolve_webhook(spec) == {"url": url, "timeout": 2} and spec == {"url_secret": "alerts-webhook", "timeout": 2}
    assert resolve_webhook("https://x.example/hook") == "https://x.example/hook" and resolve_webhook(None) is None
    hook = Webhook.from_spec({**resolve_webhook(spec), "headers": {"Authorization": "Bearer t0k"}})
    assert "s3cr3t" not in repr(hook) and "t0k" not in repr(hook) and hook.where() == "https://hooks.example.org"


def test_a_policy_change_takes_effect_on_the_next_score_run_without_a_new_version(policy_day: dict[str, Any]) -> None:
    day = policy_day
    state = day["state"]
    results = {r["group"]: r for r in state.result(raise_on_failure=False)}
    assert results["cpu"]["policy"] == "p1+override" and results["requests"]["policy"] == "trained+override"
    assert results["cpu"]["version"] == results["requests"]["version"] == "000001"
    registry = ModelRegistry(day["registry"])
    assert registry.versions("cpu") == ["000001"] and registry.policy("cpu") == day["record"]
    parts = sorted((day["workspace"] / SCORES / "cpu").glob("part-*.parquet"))
    before, after = pd.read_parquet(parts[-2])["threshold"].iloc[0], pd.read_parquet(parts[-1])["threshold"].iloc[0]
    expected = registry.load("cpu").detector.threshold_
    assert after == pytest.approx(expected) and after != before
    assert json.loads((day["workspace"] / SCORES / "cpu" / "state.json").read_text())["policy"] == "p1+override"
