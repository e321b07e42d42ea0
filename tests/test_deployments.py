"""``prefect.yaml`` declares real flows, parameters that validate, and UTC schedules; ``serve`` reads the same file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from anomaly.errors import ConfigError
from flows.serve import PROJECT_FILE, read_deployments, to_deployment

DEPLOYMENTS = read_deployments()
BY_NAME = {d["name"]: d for d in DEPLOYMENTS}


def test_the_scheduled_deployments_are_declared() -> None:
    assert {"ingest", "score", "train", "report", "pipeline"} == set(BY_NAME)
    crons = {name: [s["cron"] for s in BY_NAME[name].get("schedules", [])] for name in BY_NAME}
    assert crons == {
        "ingest": ["*/5 * * * *"],
        "score": ["1-59/5 * * * *"],  # a minute after each ingest
        "train": ["0 2 * * *"],
        "report": [],  # on demand: every score run ends with a report
        "pipeline": [],
    }
    assert all(s["timezone"] == "UTC" for d in DEPLOYMENTS for s in d.get("schedules", []))
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS} == {"anomaly"}


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_entrypoint_is_a_flow_whose_parameters_validate(name: str) -> None:
    spec = BY_NAME[name]
    flow = load_flow_from_entrypoint(str(PROJECT_FILE.parent / spec["entrypoint"]))
    validated = flow.validate_parameters(spec["parameters"])
    assert {k: validated[k] for k in spec["parameters"]} == spec["parameters"]
    deployment = to_deployment(spec)
    assert deployment.name == name and deployment.parameters == spec["parameters"]
    assert [s.schedule.cron for s in deployment.schedules] == [s["cron"] for s in spec.get("schedules", [])]


def test_unknown_parameters_are_refused_by_the_flow() -> None:
    flow = load_flow_from_entrypoint(str(PROJECT_FILE.parent / BY_NAME["score"]["entrypoint"]))
    with pytest.raises(Exception, match="workspce"):
        flow.validate_parameters({"workspce": "data"})


def test_a_trial_interval_replaces_the_schedules() -> None:
    deployment = to_deployment(BY_NAME["ingest"], interval=5)
    assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [5]


def test_the_pull_step_runs_flows_in_the_project_folder() -> None:
    project = yaml.safe_load(PROJECT_FILE.read_text())
    assert project["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}]


def test_a_project_file_without_deployments_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "prefect.yaml"
    empty.write_text("name: x\n")
    with pytest.raises(ConfigError, match="declares no deployments"):
        read_deployments(empty)
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments:\n  - name: x\n    entrypoint: flows/score.py:EVENT_FIELDS\n")
    with pytest.raises(ConfigError, match="does not name a Prefect flow"):
        to_deployment(read_deployments(bad)[0])


def test_serve_names_a_missing_deployment_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "nightly"])
    assert exit_info.value.code == 2
    assert "no deployment named ['nightly'] in" in capsys.readouterr().err
