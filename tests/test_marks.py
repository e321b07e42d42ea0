"""Feedback on alerts: marks kept with who, when and why; training, reports, precision, silences, export.

A tiny two-metric model is trained once and scores a level shift in
``requests`` (point 900) into alerts; a second shift (point 1150) arrives
later so a silenced series has a new alert to keep quiet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest

from anomaly.cli import main
from anomaly.core.data import MetricFrame
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.core.config import ScoringConfig
from anomaly.core.reconstruction import Reconstruction
from anomaly.core.scoring import COMBINED, HELD, Scorer, keep_out_of_baseline
from anomaly.errors import DataError
from anomaly.evaluation.corpus import load_corpus
from anomaly.evaluation.synthetic import clean_metrics, inject
from anomaly.io.store import RawStore
from anomaly.ops.jobs import plan_groups, score_groups, train_group
from anomaly.ops.marks import (
    Exclusion,
    Mark,
    MarkBook,
    load_marks,
    mark_alert,
    mask_spans,
    parse_silence,
    precision,
    silenced_until,
    training_exclusions,
)
from anomaly.ops.registry import ModelRegistry
from anomaly.ops.reports import SCHEMA_PATH, write_report
from anomaly.ops.workspace import STORE, Workspace
from tests.conftest import TINY, long_points

GROUPS = {"host": ["cpu", "requests"]}
T0 = pd.Timestamp("2026-02-01 00:00", tz="UTC")
SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    series = clean_metrics(1440, metrics=("requests", "cpu"), seed=11)
    first, _ = inject(series, "level_shift", "requests", 900, 60, magnitude=3.0, seed=1)
    both, _ = inject(first, "level_shift", "requests", 1150, 60, magnitude=3.0, seed=2)
    return both


def score(workspace: Path, registry: Path) -> None:
    score_groups(plan_groups(["cpu", "requests"], GROUPS), workspace, registry)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> tuple[Path, Path, str]:
    """A workspace scored through the first shift (no report yet), its registry, and the shift's alert id."""
    root = tmp_path_factory.mktemp("marks")
    workspace, registry = root / "ws", root / "models"
    RawStore(workspace / STORE).append(long_points(data.iloc[:864]))
    train_group(plan_groups(["cpu", "requests"], GROUPS)[0], workspace, registry, TINY, history="3D", validation="12h")
    RawStore(workspace / STORE).append(long_points(data.iloc[864:1040]))
    score(workspace, registry)
    alerts = Workspace(workspace).alerts()
    shift = alerts[(alerts["start"] <= data.index[930]) & (alerts["end"] >= data.index[900])]
    assert len(shift) == 1, "the tiny model finds the injected shift"
    return workspace, registry, str(shift.iloc[0]["id"])


@pytest.fixture
def ws(scored: tuple[Path, Path, str], tmp_path: Path) -> Path:
    """A copy of the scored workspace for a test to change."""
    return Path(shutil.copytree(scored[0], tmp_path / "ws"))


def record(alert: str = "a1", mark: str = "confirmed", *, model: str = "host", metrics: tuple[str, ...] = ("cpu",),
           at: str = "2026-02-01T00:00:00+00:00", silence_until: str | None = None) -> Mark:  # fmt: skip
    return Mark(alert, mark, "ann", at, "", model, metrics, "2026-01-31T00:00:00+00:00", "2026-01-31T01:00:00+00:00", silence_until)


# -- pure helpers -------------------------------------------------------------------------


def test_silence_durations_parse_and_bad_ones_are_named() -> None:
    assert parse_silence("6h") == pd.Timedelta(hours=6)
    assert parse_silence("30min") == pd.Timedelta(minutes=30)
    assert parse_silence(None) is None
    for bad in ("6x", "", "-1h", "0s", "45D"):
        with pytest.raises(DataError, match=f"silence '{bad}'"):
            parse_silence(bad)


def test_precision_counts_the_latest_mark_of_each_alert_and_expected_apart() -> None:
    book = MarkBook([
        record("a1", "false-positive"), record("a1", "confirmed"),  # re-marked: confirmed counts, not both
        record("a2", "confirmed"), record("a3", "false-positive"), record("a4", "expected"),
        record("b1", "expected", model="disk"),
    ])  # fmt: skip
    assert precision(book) == [
        {"model": "disk", "confirmed": 0, "false_positive": 0, "expected": 1, "precision": None},
        {"model": "host", "confirmed": 2, "false_positive": 1, "expected": 1, "precision": 0.6667},
    ]
    assert precision(book, ["other"]) == [{"model": "other", "confirmed": 0, "false_positive": 0, "expected": 0, "precision": None}]
    assert [m.mark for m in book.history("a1")] == ["false-positive", "confirmed"]


def test_a_silence_covers_its_series_from_the_mark_until_it_ends() -> None:
    book = MarkBook([record(at="2026-02-01T00:00:00+00:00", silence_until="2026-02-01T06:00:00+00:00")])
    until = "2026-02-01T06:00:00+00:00"
    assert silenced_until(book, "host", ["cpu", "requests"], "2026-02-01T05:59:00+00:00") == until
    assert silenced_until(book, "host", ["cpu"], "2026-02-01T06:00:00+00:00") is None  # ended
    assert silenced_until(book, "host", ["cpu"], "2026-01-31T23:00:00+00:00") is None  # before the mark
    assert silenced_until(book, "host", ["requests"], "2026-02-01T01:00:00+00:00") is None  # another series
    assert silenced_until(book, "disk", ["cpu"], "2026-02-01T01:00:00+00:00") is None  # another model
    # a re-mark without a silence lifts it
    lifted = MarkBook([*book.records, record(at="2026-02-01T00:30:00+00:00")])
    assert silenced_until(lifted, "host", ["cpu"], "2026-02-01T01:00:00+00:00") is None


def test_mask_spans_makes_only_the_marked_points_of_the_marked_metrics_missing() -> None:
    index = pd.date_range("2026-01-01", periods=6, freq="5min", tz="UTC")
    values = pd.DataFrame({"cpu": [1.0, 2, 3, 4, 5, 6], "mem": [1.0, 1, np.nan, 1, 1, 1]}, index=index)
    filled = pd.DataFrame(False, index=index, columns=values.columns)
    filled.loc[index[3], "cpu"] = True
    frame, hidden = mask_spans(MetricFrame(values, filled, pd.Timedelta("5min")), [Exclusion("a", ("cpu", "mem"), index[1], index[3])])
    assert frame.values["cpu"].isna().tolist() == [False, True, True, True, False, False]
    assert frame.values["mem"].isna().tolist() == [False, True, True, True, False, False]
    assert not frame.filled.to_numpy().any(), "a masked point is missing, not filled"
    assert hidden == 5  # mem's point 2 was missing already


# -- marking ------------------------------------------------------------------------------


def test_a_mark_is_kept_with_who_when_and_why_and_a_re_mark_keeps_history(
    scored: tuple[Path, Path, str], ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alert = scored[2]
    monkeypatch.setenv("USER", "carol")
    first = mark_alert(ws, alert, "false-positive", note="load test", now=T0)
    assert (first.by, first.at, first.note, first.model) == ("carol", T0.isoformat(), "load test", "host")
    assert set(first.metrics) == {"cpu", "requests"} and first.silence_until is None
    mark_alert(ws, alert, "confirmed", by="dave", silence="6h", now=T0 + pd.Timedelta("1h"))
    stored = json.loads((ws / "reports" / "marks.json").read_text())
    assert stored["format_version"] == 1 and len(stored["marks"]) == 2
    book = load_marks(ws)
    assert book.current()[alert].mark == "confirmed" and book.current()[alert].by == "dave"
    assert book.current()[alert].silence_until == (T0 + pd.Timedelta("7h")).isoformat()
    assert [m.mark for m in book.history(alert)] == ["false-positive", "confirmed"]


def test_without_user_the_login_name_marks(scored: tuple[Path, Path, str], ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "svc-worker")
    assert mark_alert(ws, scored[2], "confirmed").by == "svc-worker"


def test_an_unknown_id_bad_input_or_damaged_file_is_refused_and_changes_nothing(scored: tuple[Path, Path, str], ws: Path) -> None:
    alert = scored[2]
    with pytest.raises(DataError, match="no alert 'feedfacefeedface'"):
        mark_alert(ws, "feedfacefeedface", "confirmed")
    assert not (ws / "reports" / "marks.json").exists()
    mark_alert(ws, alert, "confirmed", by="erin")
    before = (ws / "reports" / "marks.json").read_bytes()
    for kwargs, message in (({"silence": "soon"}, "silence 'soon'"), ({"by": ""}, "--by ''"), ({"note": "x" * 3000}, "note of 3,000")):
        with pytest.raises(DataError, match=message):
            mark_alert(ws, alert, "expected", **kwargs)
    with pytest.raises(DataError, match="mark 'wrong' is not one of"):
        mark_alert(ws, alert, "wrong")
    assert (ws / "reports" / "marks.json").read_bytes() == before
    (ws / "reports" / "marks.json").write_text('{"format_version": 1, "marks": [{"alert": 3}]}')
    with pytest.raises(DataError, match="marks.json' is not a marks file"):
        mark_alert(ws, alert, "expected")
    assert (ws / "reports" / "marks.json").read_text() == '{"format_version": 1, "marks": [{"alert": 3}]}'


# -- training -----------------------------------------------------------------------------


def test_a_retrain_after_a_false_positive_mark_leaves_its_points_out(
    scored: tuple[Path, Path, str], ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, alert = Path(shutil.copytree(scored[1], tmp_path / "models")), scored[2]
    mark_alert(ws, alert, "false-positive", by="fay")
    span = Workspace(ws).alerts().set_index("id").loc[alert]
    fitted: list[Any] = []
    original = LSTMAutoencoderDetector.fit

    def spy(self: LSTMAutoencoderDetector, data: Any, **kwargs: Any) -> LSTMAutoencoderDetector:
        fitted.append(data)
        return original(self, data, **kwargs)

    monkeypatch.setattr(LSTMAutoencoderDetector, "fit", spy)
    group = plan_groups(["cpu", "requests"], GROUPS)[0]
    result = train_group(group, ws, registry, TINY, history="3D", validation="2h")  # the shift is in the training slice
    frame = fitted[0]
    inside = (frame.values.index >= span["start"]) & (frame.values.index <= span["end"])
    assert inside.sum() > 10
    for metric in ("cpu", "requests"):
        assert frame.values.loc[inside, metric].isna().all() and frame.values.loc[~inside, metric].notna().all()
    assert result["excluded_points"] == 2 * int(inside.sum())
    version = ModelRegistry(registry).get("host", result["version"])
    assert version.metadata["evaluation"]["excluded_alerts"] == [alert]
    detector = ModelRegistry(registry).load("host", version=result["version"]).detector
    rows = np.isnan(detector.residuals_).all(axis=1)
    assert rows.tolist() == inside.tolist(), "the published version's residuals show the marked rows as missing"
    # keyed by alert id and model, not version: the mark is still there for the next retrain
    assert load_marks(ws).current()[alert].mark == "false-positive"
    assert [e.alert for e in training_exclusions(ws, "host", group.metrics)] == [alert]


def test_a_false_positive_mark_keeps_its_points_out_of_the_live_baseline(
    scored: tuple[Path, Path, str], ws: Path, data: pd.DataFrame, tmp_path: Path
) -> None:
    """The carry the next score run continues from holds the marked rows out; an unmarked twin keeps them in."""
    registry, alert = scored[1], scored[2]
    twin = Path(shutil.copytree(ws, tmp_path / "twin"))
    policy = {"scoring": {"baseline": 300, "baseline_warmup": None, "baseline_hold": "10min"}, "threshold": {"method": "fixed", "k": 4.0}}
    groups = plan_groups(["cpu", "requests"], GROUPS)
    for rows in (slice(1040, 1070), slice(1070, 1100)):  # the first run under this policy leaves a carry; the second continues it
        if rows.start == 1070:
            mark_alert(ws, alert, "false-positive", by="fay")
        for space in (ws, twin):
            RawStore(space / STORE).append(long_points(data.iloc[rows]))
            score_groups(groups, space, registry, policy=policy)
    span = Workspace(ws).alerts().set_index("id").loc[alert]

    def carry(space: Path) -> pd.DataFrame:
        state = Workspace(space).score_state("host")
        assert state is not None and state.carry
        return pd.read_parquet(Workspace(space).scores_dir("host") / state.carry).set_index("timestamp")

    marked, plain = carry(ws), carry(twin)
    inside = (marked.index >= span["start"]) & (marked.index <= span["end"])
    assert inside.sum() > 10 and (marked.index == plain.index).all()
    held = [c for c in marked.columns if c.startswith(HELD)]
    assert held and (marked.loc[inside, held] >= 1).all().all()
    assert (plain.loc[inside, held] == 0).any().any(), "unmarked, some of those rows were in the baseline"
    pd.testing.assert_frame_equal(marked.loc[~inside], plain.loc[~inside])  # nothing else changed


def test_rows_kept_out_of_a_carry_leave_the_baseline_the_next_scores_are_measured_against() -> None:
    """A marked burst of large errors no longer lifts the baseline: the points after it score higher."""
    scoring = ScoringConfig(error="abs", smoothing_span=0, smoothing_time=None, baseline=100, baseline_exclude=4.5, baseline_hold=None, baseline_warmup=None)
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(0, 0.1, 160))
    errors[40:60] += 0.12  # raised errors, about 2 sigma: the exclusion rule (4.5 sigma) keeps them in the baseline
    index = pd.date_range("2026-01-01", periods=160, freq="5min", tz="UTC", name="timestamp")

    def recon(rows: slice) -> Reconstruction:
        part = errors[rows, None]
        return Reconstruction(index[rows], pd.Timedelta("5min"), ("cpu",), part, np.zeros_like(part), np.zeros(part.shape, bool), np.zeros(part.shape, bool))

    scorer = Scorer(scoring)
    _, carry = scorer.score(recon(slice(0, 120)))
    assert carry is not None
    masked = keep_out_of_baseline(carry, [(index[40], index[59], ("cpu",))])
    plain = scorer.score(recon(slice(0, 160)), carry)[0].score[120:]
    kept_out = scorer.score(recon(slice(0, 160)), masked)[0].score[120:]
    assert (kept_out >= plain).all() and (kept_out > plain).sum() > 10  # the rest are 0 in both: scores are clipped at 0


def test_keeping_rows_out_of_the_baseline_marks_the_named_columns_only_and_is_idempotent() -> None:
    index = pd.date_range("2026-01-01", periods=4, freq="5min", tz="UTC", name="timestamp")
    carry = pd.DataFrame({"cpu": 1.0, "mem": 2.0, COMBINED: 1.5, HELD + "cpu": [0, 3, 2, 0], HELD + "mem": 0, HELD + COMBINED: 0}, index)
    span = [(index[1], index[2], ("cpu",))]
    out = keep_out_of_baseline(carry, span)
    assert out[HELD + "cpu"].tolist() == [0, 3, 2, 0] and out[HELD + COMBINED].tolist() == [0, 1, 1, 0]
    assert out[HELD + "mem"].tolist() == [0, 0, 0, 0] and out[["cpu", "mem", COMBINED]].equals(carry[["cpu", "mem", COMBINED]])
    pd.testing.assert_frame_equal(keep_out_of_baseline(out, span), out)
    bare = keep_out_of_baseline(carry[["cpu", "mem", COMBINED]], span)  # no exclusion counts: the values leave
    assert bare["cpu"].isna().tolist() == [False, True, True, False] and bare["mem"].notna().all()


def test_a_training_slice_emptied_by_marks_says_so(scored: tuple[Path, Path, str], ws: Path, tmp_path: Path) -> None:
    mark_alert(ws, scored[2], "expected", by="ola")
    group = plan_groups(["cpu", "requests"], GROUPS)[0]
    # 4 hours before the holdout: the marked shift covers most of every window
    with pytest.raises(DataError, match=r"no training window .* belong to alerts marked false-positive or expected"):
        train_group(group, ws, tmp_path / "models", TINY, history="8h", validation="5h")


def test_a_confirmed_mark_or_another_model_masks_nothing(scored: tuple[Path, Path, str], ws: Path) -> None:
    mark_alert(ws, scored[2], "confirmed", by="gus")
    assert training_exclusions(ws, "host", ["cpu", "requests"]) == []
    mark_alert(ws, scored[2], "expected", by="gus")
    assert [e.metrics for e in training_exclusions(ws, "host", ["cpu", "requests"])] == [("cpu", "requests")]
    assert training_exclusions(ws, "disk", ["disk"]) == []


# -- reports ------------------------------------------------------------------------------


def test_the_next_report_shows_marks_precision_and_lists_a_silenced_series_quietly(
    scored: tuple[Path, Path, str], ws: Path, data: pd.DataFrame
) -> None:
    registry, alert = scored[1], scored[2]
    first = write_report(ws, now=T0)
    assert alert in {a["id"] for a in first.new_alerts}
    mark_alert(ws, alert, "false-positive", note="load | test", silence="1D", by="alice", now=T0 + pd.Timedelta("10min"))
    RawStore(ws / STORE).append(long_points(data.iloc[1040:1300]))
    score(ws, registry)
    announced: list[dict[str, Any]] = []
    report = write_report(ws, now=T0 + pd.Timedelta("1h"), announce=lambda alerts, link: announced.extend(alerts),
                          webhook={"url": "http://127.0.0.1:9/hook", "retries": 0, "timeout": 1},
                          alertmanager={"url": "http://127.0.0.1:9", "timeout": 1})  # fmt: skip
    doc = report.document
    jsonschema.validate(doc, SCHEMA)
    until = (T0 + pd.Timedelta("10min") + pd.Timedelta("1D")).isoformat()
    quiet = [a for a in doc["alerts"] if a["silenced_until"]]
    assert quiet and all(a["state"] == "new" and a["silenced_until"] == until and "requests" in a["metrics"] for a in quiet)
    assert pd.Timestamp(quiet[0]["start"]) >= data.index[1100], "the second shift's alert"
    assert doc["feedback"]["silenced"] == len(quiet)
    assert sum(doc["counts"]["new"].values()) == len([a for a in doc["alerts"] if a["state"] == "new"]) - len(quiet)
    quiet_ids = {a["id"] for a in quiet}
    assert not quiet_ids & {a["id"] for a in announced}, "no Prefect event for a silenced alert"
    assert not any(item["key"].split(":")[0] in quiet_ids for item in Workspace(ws).ledger_path.exists() and
                   json.loads(Workspace(ws).ledger_path.read_text())["outbox"])  # fmt: skip
    followed = json.loads(Workspace(ws).alertmanager_state_path.read_text())
    assert not quiet_ids & set(json.dumps(followed).replace('"', " ").split()), "nor an Alertmanager alert"
    assert [m["alert"] for m in doc["feedback"]["marks"]] == [alert]
    assert doc["feedback"]["precision"] == [{"model": "host", "confirmed": 0, "false_positive": 1, "expected": 0, "precision": 0.0}]
    assert f"{len(quiet)} silenced" in report.markdown.splitlines()[2]
    assert "## Silenced" in report.markdown and "silenced until 2026-02-02 00:10 UTC" in report.markdown
    assert f"alert `{alert}`" in report.markdown and "false-positive by alice on 2026-02-01 00:10 UTC: load | test" in report.markdown
    assert "alert precision as marked, model host: 0% (0 confirmed, 1 false positive; 0 expected)" in report.markdown
    html = report.paths["html"].read_text()
    assert 'id="silenced"' in html and "false-positive by alice" in html
    later = write_report(ws, now=T0 + pd.Timedelta("2h")).document
    assert later["feedback"]["marks"] == [] and later["feedback"]["precision"][0]["false_positive"] == 1


def test_a_damaged_marks_file_is_named_in_the_report_and_does_not_stop_it(ws: Path) -> None:
    (ws / "reports").mkdir(exist_ok=True)
    (ws / "reports" / "marks.json").write_text("[1, 2")
    report = write_report(ws, now=T0)
    assert "marks.json" in report.document["feedback"]["problem"] and "**marks not read**" in report.markdown
    assert report.new_alerts and (ws / "reports" / "state.json").exists()
    assert (ws / "reports" / "marks.json").read_text() == "[1, 2"


# -- export -------------------------------------------------------------------------------


def test_export_writes_confirmed_marks_as_windows_the_corpus_loader_reads(scored: tuple[Path, Path, str], ws: Path, tmp_path: Path) -> None:
    alerts = Workspace(ws).alerts()
    other = next(str(i) for i in alerts["id"] if str(i) != scored[2])
    mark_alert(ws, scored[2], "confirmed", by="hal")
    mark_alert(ws, other, "false-positive", by="hal")
    out = tmp_path / "labels-out"
    assert main(["alerts", "export", "--out", str(out), "--workspace", str(ws)]) == 0
    files = {f.key: f for f in load_corpus(out)}
    assert set(files) == {"host/cpu.csv", "host/requests.csv"}
    span = alerts.set_index("id").loc[scored[2]]
    for f in files.values():
        assert f.windows == ((span["start"], span["end"]),)  # the false positive is not an anomaly window
        assert len(pd.read_csv(f.path)) == 1040
    assert json.loads((out / "labels" / "combined_windows.json").read_text())["host/cpu.csv"][0][0].endswith(".000000")


# -- command line and flow ----------------------------------------------------------------


def test_alerts_commands_list_show_mark_and_refuse_in_one_line(
    scored: tuple[Path, Path, str], ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alert, where = scored[2], ["--workspace", str(ws)]
    monkeypatch.setenv("USER", "ivy")
    assert main(["alerts", "list", *where, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert alert in {row["id"] for row in listed} and all(row["mark"] == "-" for row in listed)
    assert main(["alerts", "mark", alert, "--expected", "--note", "deploy", "--silence", "6h", *where]) == 0
    assert f"alert {alert} (host): expected by ivy; new alerts of" in capsys.readouterr().out
    assert main(["alerts", "mark", alert, "--confirmed", "--by", "jo", *where]) == 0
    capsys.readouterr()
    assert main(["alerts", "show", alert, *where]) == 0
    shown = capsys.readouterr().out
    assert "expected       by ivy (replaced), silenced until" in shown and "confirmed      by jo (current)" in shown
    assert main(["alerts", "list", *where]) == 0
    assert "confirmed" in capsys.readouterr().out
    before = (ws / "reports" / "marks.json").read_bytes()
    for argv, named in (
        (["alerts", "mark", "0123abcd", "--confirmed", *where], "no alert '0123abcd'"),
        (["alerts", "mark", alert, "--confirmed", "--silence", "6hours?", *where], "silence '6hours?'"),
        (["alerts", "show", "0123abcd", *where], "no alert '0123abcd'"),
        (["alerts", "list", "--workspace", str(ws / "nope")], "is not a folder"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err and err.count("\n") == 1
    assert (ws / "reports" / "marks.json").read_bytes() == before
    (ws / "reports" / "marks.json").write_text("{broken")
    assert main(["alerts", "mark", alert, "--confirmed", *where]) == 2
    assert "marks.json" in capsys.readouterr().err and (ws / "reports" / "marks.json").read_text() == "{broken"


def test_models_show_gives_the_precision_as_marked_from_the_workspace(
    scored: tuple[Path, Path, str], ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mark_alert(ws, scored[2], "confirmed", by="kim")
    assert main(["models", "show", "host", "--registry", str(scored[1]), "--workspace", str(ws)]) == 0
    assert "alert precision as marked" in (out := capsys.readouterr().out) and "100% (1 confirmed, 0 false positive; 0 expected)" in out
    monkeypatch.setenv("ANOMALY_WORKSPACE", str(ws))
    assert main(["models", "show", "host", "--registry", str(scored[1])]) == 0
    assert "100% (1 confirmed" in capsys.readouterr().out
    (ws / "reports" / "marks.json").write_text("{broken")
    assert main(["models", "show", "host", "--registry", str(scored[1])]) == 0
    assert "alert precision as marked: not read (cannot read" in capsys.readouterr().out
    monkeypatch.delenv("ANOMALY_WORKSPACE")
    monkeypatch.chdir(ws.parent)  # no ./data here: no precision line, and no error
    assert main(["models", "show", "host", "--registry", str(scored[1])]) == 0
    assert "precision" not in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_harness")
def test_the_feedback_flow_marks_an_alert_and_refuses_an_unknown_one(scored: tuple[Path, Path, str], ws: Path) -> None:
    from flows.feedback import feedback_flow

    result = feedback_flow(alert=scored[2], mark="false-positive", note="flow", by="lee", workspace=str(ws))
    assert result["alert"] == scored[2] and result["by"] == "lee"
    assert load_marks(ws).current()[scored[2]].note == "flow"
    with pytest.raises(DataError, match="no alert 'nope'"):
        feedback_flow(alert="nope", mark="confirmed", workspace=str(ws))
