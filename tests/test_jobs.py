"""The scheduled units of work without Prefect: planning groups, training, scoring (reports: test_reports.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.detector import context_points
from anomaly.errors import DataError
from anomaly.ops.jobs import (
    Group,
    holdout_error,
    new_events,
    plan_groups,
    plan_store_groups,
    promotion,
    score_group,
    score_groups,
    train_group,
)
from anomaly.ops.workspace import EVENTS, SCORES, STORE, Workspace
from anomaly.ops.registry import ModelRegistry
from anomaly.io.catalogue import Series
from anomaly.io.store import RawStore
from anomaly.ops.reports import write_report
from anomaly.evaluation.synthetic import clean_metrics, inject
from tests.conftest import TINY, long_points, read_parts

STEP = pd.Timedelta("5min")


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    """Five days of 5-minute requests and cpu: three for history, two arriving later."""
    return clean_metrics(1440, metrics=("requests", "cpu"), seed=11)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, series: pd.DataFrame) -> tuple[Path, Path, list[dict]]:
    """A workspace whose store holds three days, and one promoted tiny model per metric."""
    root = tmp_path_factory.mktemp("jobs")
    workspace, registry = root / "ws", root / "models"
    RawStore(workspace / STORE).append(long_points(series.iloc[:864]))
    results = [
        train_group(g, workspace, registry, TINY, history="3D", validation="12h")
        for g in plan_groups(["cpu", "requests"])
    ]
    return workspace, registry, results


def copy_workspace(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


# -- planning ---------------------------------------------------------------------------


def test_one_model_per_metric_by_default_and_configured_groups_together() -> None:
    assert plan_groups(["cpu", "mem"]) == [Group("cpu", ("cpu",)), Group("mem", ("mem",))]
    planned = plan_groups(["cpu", "mem", "disk"], {"host": ["cpu", "mem"]})
    assert planned == [Group("host", ("cpu", "mem")), Group("disk", ("disk",))]


def test_metric_names_become_valid_model_names() -> None:
    assert plan_groups(["http:requests.rate"])[0].name == "http_requests.rate"
    assert plan_groups([":x"])[0].name == "x"


def test_a_group_without_metrics_is_refused() -> None:
    with pytest.raises(DataError, match="group 'host' has no metrics"):
        plan_groups(["cpu"], {"host": []})


CATALOGUE = {
    "api.instance_a.job_checkout": Series("api.instance_a.job_checkout", "api", {"job": "checkout", "instance": "a"}),
    "api.instance_b.job_checkout": Series("api.instance_b.job_checkout", "api", {"job": "checkout", "instance": "b"}),
    "db.instance_a.job_orders": Series("db.instance_a.job_orders", "db", {"job": "orders", "instance": "a"}),
}


def test_a_label_selector_groups_the_stored_series_whose_labels_match() -> None:
    stored = [*CATALOGUE, "cpu"]
    planned = plan_groups(stored, {"checkout": {"match": {"job": "checkout"}}, "host": ["cpu"]}, CATALOGUE)
    assert planned == [
        Group("checkout", ("api.instance_a.job_checkout", "api.instance_b.job_checkout")),
        Group("host", ("cpu",)),
        Group("db.instance_a.job_orders", ("db.instance_a.job_orders",)),
    ]
    by_name = plan_groups(stored, {"a": {"match": {"__name__": "db", "instance": "a"}}}, CATALOGUE)
    assert by_name[0] == Group("a", ("db.instance_a.job_orders",)), "__name__ matches the metric name"
    unlabelled = plan_groups(stored, {"c": {"match": {"__name__": "cpu"}}}, {})
    assert unlabelled[0] == Group("c", ("cpu",)), "a series without an entry is its store name with no labels"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"match": {"job": 3}}, r"the label selector of group 'g' must be a non-empty mapping of label names to string values, got \{'job': 3\}"),
        ({"match": ["job", "checkout"]}, r"must be a non-empty mapping of label names to string values, got \['job', 'checkout'\]"),
        ({"match": {}}, "must be a non-empty mapping"),
        ({"match": {"job name": "x"}}, "label 'job name' is not a label name"),
        ({"match": {"job": "x"}, "extra": 1}, r"group 'g' must be a list of metrics or \{'match'"),
        ("cpu", "group 'g' must be a list of metric names or"),
        ([1, 2], r"group 'g' must be a list of metric names or \{'match': \{label: value\}\}, got \[1, 2\]"),
        ({"match": {"job": "nowhere"}}, r"group 'g': the label selector \{'job': 'nowhere'\} matches none of the 4 stored metric\(s\)"),
    ],
)
def test_a_bad_group_is_refused_in_one_line_naming_it(spec: object, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        plan_groups([*CATALOGUE, "cpu"], {"g": spec}, CATALOGUE)
    assert "\n" not in str(info.value)


def test_a_store_without_a_catalogue_plans_trains_scores_and_reports_with_flattened_names(
    trained: tuple[Path, Path, list[dict]], series: pd.DataFrame, tmp_path: Path
) -> None:
    workspace, registry = copy_workspace(trained[0], tmp_path / "ws"), trained[1]
    store = Workspace(workspace).store()
    assert not store.catalogue_path.exists() and store.series() == {}, "written before the catalogue existed"
    assert plan_store_groups(store) == plan_groups(["cpu", "requests"]), "no selector: the catalogue is not even needed"
    (selected, rest) = plan_store_groups(store, {"cpu": {"match": {"__name__": "cpu"}}})
    assert (selected, rest) == (Group("cpu", ("cpu",)), Group("requests", ("requests",)))
    store.append(long_points(series.iloc[864:900]))
    results = score_groups([selected, rest], workspace, registry)
    assert [r["status"] for r in results] == ["scored", "scored"]
    report = write_report(workspace, now=series.index[900])
    assert report.document["labels_problem"] is None and all(a["labels"] == {} for a in report.document["alerts"])
    assert not store.catalogue_path.exists(), "nothing was rewritten"


# -- training ---------------------------------------------------------------------------


def test_the_first_model_of_each_group_is_published_and_promoted(trained: tuple[Path, Path, list[dict]]) -> None:
    workspace, registry_root, results = trained
    registry = ModelRegistry(registry_root)
    assert [r["group"] for r in results] == ["cpu", "requests"]
    for r in results:
        assert r["promoted"] and r["reason"] == "first model for this group: promoted"
        assert registry.aliases(r["group"]) == {"production": r["version"]}
        evaluation = registry.get(r["group"], r["version"]).metadata["evaluation"]
        assert evaluation["holdout_points"] == 144  # the newest 12 hours were held out
        assert evaluation["holdout_error"] == pytest.approx(r["holdout_error"]) and r["holdout_error"] > 0
        assert evaluation["production_version"] is None
        # trained on the history before the holdout
        assert r["train_points"] == 864 - 144


def test_a_retrain_that_is_not_worse_replaces_production(trained: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    workspace, registry_root, _ = trained
    registry_root = copy_workspace(registry_root, tmp_path / "models")
    result = train_group(Group("cpu", ("cpu",)), workspace, registry_root, TINY, history="3D", validation="12h")
    registry = ModelRegistry(registry_root)
    evaluation = registry.get("cpu", result["version"]).metadata["evaluation"]
    assert evaluation["production_version"] == "000001"
    # the same data and seed give the same model, so the errors match and the new one is promoted
    assert evaluation["holdout_error"] == pytest.approx(evaluation["production_holdout_error"], rel=1e-6)
    assert result["promoted"] and registry.aliases("cpu")["production"] == result["version"] == "000002"


def test_a_retrain_that_is_worse_is_left_for_review(trained: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    workspace, registry_root, _ = trained
    registry_root = copy_workspace(registry_root, tmp_path / "models")
    # a required improvement of 90% cannot be met by a model identical to production
    result = train_group(Group("cpu", ("cpu",)), workspace, registry_root, TINY, history="3D", validation="12h", tolerance=-0.9)
    registry = ModelRegistry(registry_root)
    assert not result["promoted"] and "left for review" in result["reason"]
    assert registry.versions("cpu") == ["000001", "000002"]
    assert registry.aliases("cpu") == {"production": "000001"}
    assert registry.get("cpu", "000002").metadata["evaluation"]["promoted"] is False


@pytest.mark.parametrize(
    ("new", "current", "promoted", "words"),
    [
        (1.0, None, True, "first model"),
        (None, 1.0, False, "no recent data"),
        (1.1, 1.0, True, "promoted"),
        (1.11, 1.0, False, "more than 10% above production's 1"),
        (0.5, 1.0, True, "promoted"),
    ],
)
def test_the_promotion_rule(new: float | None, current: float | None, promoted: bool, words: str) -> None:
    decision, reason = promotion(new, current, 0.10)
    assert decision is promoted and words in reason


def test_holdout_error_grows_with_behaviour_the_model_has_not_seen(trained: tuple[Path, Path, list[dict]], series: pd.DataFrame) -> None:
    _, registry_root, _ = trained
    detector = ModelRegistry(registry_root).load("cpu", alias="production").detector
    recent, context = series[["cpu"]].iloc[720:864], series[["cpu"]].iloc[:720]
    error = holdout_error(detector, recent, context)
    assert error is not None and 0 < error < 1
    # behaviour the model has not learned reconstructs worse
    shifted, _ = inject(series[["cpu"]], "level_shift", "cpu", 760, 72, magnitude=3.0, seed=2)
    worse = holdout_error(detector, shifted.iloc[720:864], context)
    assert worse is not None and worse > 1.5 * error
    assert holdout_error(detector, recent.iloc[:0], context) is None


def test_training_a_group_whose_metric_is_not_stored_names_it(trained: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    workspace, _, _ = trained
    with pytest.raises(DataError, match=r"group 'disk': no stored points for \['disk'\]"):
        train_group(Group("disk", ("disk",)), workspace, tmp_path / "models", TINY)


@pytest.mark.parametrize(("history", "message"), [("soon", "history 'soon' is not a duration"), ("-1D", "history must be a positive")])
def test_bad_training_windows_are_named(trained: tuple[Path, Path, list[dict]], tmp_path: Path, history: str, message: str) -> None:
    workspace, _, _ = trained
    with pytest.raises(DataError, match=message):
        train_group(Group("cpu", ("cpu",)), workspace, tmp_path / "models", TINY, history=history)


# -- scoring ----------------------------------------------------------------------------


def test_a_group_without_a_production_model_is_reported_not_raised(trained: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    workspace, _, _ = trained
    result = score_group(Group("cpu", ("cpu",)), workspace, tmp_path / "empty-registry")
    assert result["status"] == "no-model" and "no production model 'cpu'" in result["message"]


def test_scoring_starts_after_the_training_data_and_never_rescores(
    trained: tuple[Path, Path, list[dict]], series: pd.DataFrame, tmp_path: Path
) -> None:
    source, registry, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")
    group = Group("cpu", ("cpu",))
    first = score_group(group, workspace, registry)
    # the model was trained up to the holdout: the first run scores the held-out 12 hours
    assert first["status"] == "scored" and first["points"] == 144
    assert pd.Timestamp(first["from"]) == series.index[720] and pd.Timestamp(first["to"]) == series.index[863]
    assert score_group(group, workspace, registry)["status"] == "no-new-data"

    store = RawStore(workspace / STORE)
    store.append(long_points(series.iloc[864:900]))
    second = score_group(group, workspace, registry)
    assert second["points"] == 36 and pd.Timestamp(second["from"]) == series.index[864]
    scores = read_parts(workspace / SCORES / "cpu")
    assert len(scores) == 180 and scores["timestamp"].is_unique and scores["timestamp"].is_monotonic_increasing
    # the context of earlier points gives the first new point a full-window score
    first_new = scores.set_index("timestamp").loc[series.index[864]]
    assert np.isfinite(first_new["anomaly_score"])
    state = json.loads((workspace / SCORES / "cpu" / "state.json").read_text())
    assert pd.Timestamp(state["last_scored"]) == series.index[899] and state["version"] == "000001"


def test_an_incident_in_new_data_is_written_as_an_event_once(
    trained: tuple[Path, Path, list[dict]], series: pd.DataFrame, tmp_path: Path
) -> None:
    source, registry, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")
    broken, incident = inject(series, "level_shift", "requests", 900, 36, magnitude=3.0, seed=1)
    store = RawStore(workspace / STORE)
    store.append(long_points(broken.iloc[864:1000]))
    group = Group("requests", ("requests",))
    result = score_group(group, workspace, registry)
    assert result["events"] >= 1 and result["events_file"]
    events = new_events([result])
    assert any(pd.Timestamp(e.start) <= incident.end and incident.start <= pd.Timestamp(e.end) for e in events.itertuples())
    assert set(events["model"]) == {"requests"} and set(events["version"]) == {"000001"}
    store.append(long_points(broken.iloc[1000:1010]))
    later = score_group(group, workspace, registry)
    assert later["points"] == 10 and later["events"] == 0 and later["events_file"] is None
    assert len(read_parts(workspace / EVENTS / "requests")) == result["events"]


def test_a_run_continues_from_the_last_runs_carry_and_reads_only_the_windows_context(
    trained: tuple[Path, Path, list[dict]], series: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from anomaly.ops import jobs
    source, registry, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")
    folder, group, store = workspace / SCORES / "cpu", Group("cpu", ("cpu",)), RawStore(workspace / STORE)
    starts: list[pd.Timestamp] = []
    read_wide = RawStore.read_wide
    monkeypatch.setattr(RawStore, "read_wide", lambda self, metrics, start: starts.append(start) or read_wide(self, metrics, start))

    def state() -> dict:
        return json.loads((folder / "state.json").read_text())

    def carries() -> list[str]:
        return sorted(p.name for p in folder.glob("carry-*.parquet"))

    score_group(group, workspace, registry)  # no carry yet: the context covers the smoothing's memory too
    config = ModelRegistry(registry).load("cpu", alias="production").detector.config
    assert starts[-1] == series.index[719] - context_points(config, STEP) * STEP + pd.Timedelta(1, "ns")
    assert carries() == [state()["carry"]]
    first_carry = state()["carry"]
    # the carry stops one window before the last point scored: those points are smoothed again next run
    assert pd.read_parquet(folder / first_carry)["timestamp"].iloc[-1] == series.index[863 - config.window.size]

    store.append(long_points(series.iloc[864:900]))
    score_group(group, workspace, registry)
    assert starts[-1] == series.index[863] - 2 * config.window.size * STEP + pd.Timedelta(1, "ns")
    assert carries() == [state()["carry"]] and state()["carry"] != first_carry

    # a run that crashes before its state moves leaves a carry nothing names; the next run removes it
    store.append(long_points(series.iloc[900:910]))
    with monkeypatch.context() as crash, pytest.raises(OSError, match="disk full"):
        crash.setattr(Workspace, "write_score_state", lambda self, group, state: (_ for _ in ()).throw(OSError("disk full")))
        score_group(group, workspace, registry)
    assert len(carries()) == 2
    score_group(group, workspace, registry)
    assert carries() == [state()["carry"]]

    # a carry made by another version (or under another scoring) measures other errors: the full context instead
    (folder / "state.json").write_text(json.dumps({**state(), "carry_key": "000000:another"}))
    store.append(long_points(series.iloc[910:920]))
    score_group(group, workspace, registry)
    assert starts[-1] == series.index[909] - context_points(config, STEP) * STEP + pd.Timedelta(1, "ns")

    # a damaged carry costs one run the full context, not the group its scoring
    (folder / state()["carry"]).write_bytes(b"not parquet")
    store.append(long_points(series.iloc[920:930]))
    assert score_group(group, workspace, registry)["points"] == 10
    assert starts[-1] == series.index[919] - context_points(config, STEP) * STEP + pd.Timedelta(1, "ns")
    assert carries() == [state()["carry"]]


def test_a_crash_before_the_state_is_saved_rescores_once_rather_than_skips_or_doubles(
    trained: tuple[Path, Path, list[dict]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import anomaly.ops.jobs as jobs

    source, registry, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")

    def crash(self: Workspace, group: str, state: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Workspace, "write_score_state", crash)
    with pytest.raises(OSError, match="disk full"):
        score_group(Group("cpu", ("cpu",)), workspace, registry)
    monkeypatch.undo()
    assert len(read_parts(workspace / SCORES / "cpu")) == 144  # written, but the state did not move
    again = score_group(Group("cpu", ("cpu",)), workspace, registry)
    assert again["status"] == "scored" and again["points"] == 144
    # the crashed run's part was replaced, not added to
    assert len(read_parts(workspace / SCORES / "cpu")) == 144


def test_score_groups_isolates_a_failing_group(trained: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    source, registry_source, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")
    registry = copy_workspace(registry_source, tmp_path / "models")
    (registry / "cpu" / "versions" / "000001" / "scaler.json").write_text("{}")
    results = score_groups([Group("cpu", ("cpu",)), Group("requests", ("requests",))], workspace, registry)
    assert [r["status"] for r in results] == ["failed", "scored"]
    assert results[0]["message"].startswith("ModelFileError:") and "scaler.json" in results[0]["message"]
    assert not (workspace / SCORES / "cpu").exists() and results[1]["points"] == 144


def test_incremental_scores_match_scoring_everything_at_once_away_from_each_runs_end(
    trained: tuple[Path, Path, list[dict]], series: pd.DataFrame, tmp_path: Path
) -> None:
    """Scoring windows sit at fixed grid positions, so a point's score does not depend on how runs split the data,

    except in the last window of points of a run, which are scored once, with the windows that exist then.
    """
    source, registry, _ = trained
    workspace = copy_workspace(source, tmp_path / "ws")
    store, group = RawStore(workspace / STORE), Group("cpu", ("cpu",))
    ends = [864, 900, 950, 1000]  # the holdout run, then three scheduled runs with a few new points each
    score_group(group, workspace, registry)
    for start, stop in zip(ends, ends[1:]):
        store.append(long_points(series.iloc[start:stop]))
        score_group(group, workspace, registry)
    incremental = read_parts(workspace / SCORES / "cpu").set_index("timestamp")["anomaly_score"]
    detector = ModelRegistry(registry).load("cpu", alias="production").detector
    whole = detector.score(series[["cpu"]].iloc[720:1000], context=series[["cpu"]].iloc[:720]).score
    assert list(incremental.index) == list(whole.index)
    window = TINY.window.size
    settled = np.ones(len(whole), dtype=bool)
    for end in ends:
        settled[end - 720 - window : end - 720] = False
    np.testing.assert_allclose(incremental.to_numpy()[settled], whole.to_numpy()[settled], rtol=1e-5, atol=1e-7)
    assert not np.allclose(incremental.to_numpy()[~settled], whole.to_numpy()[~settled], rtol=1e-5, atol=1e-7)


def test_two_metrics_that_would_share_a_model_name_are_refused() -> None:
    with pytest.raises(DataError, match=r"groups \('a:b',\) and \('a_b',\) would share the model name 'a_b'"):
        plan_groups(["a:b", "a_b"])
