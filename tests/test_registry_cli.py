"""The registry from the command line: train --name, detect --name, models list/show/promote/rollback/prune/policy."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from anomaly.cli import main
from anomaly.ops.registry import ModelRegistry
from anomaly.evaluation.synthetic import clean_metrics, inject
from tests.conftest import TINY_SETTINGS as CONFTEST_SETTINGS

TINY_SETTINGS = [*CONFTEST_SETTINGS, "--set", "training.num_threads=1"]


@dataclass(frozen=True)
class Trained:
    root: Path  # the registry folder (never changed after the fixture: tests copy it)
    history: Path  # wide CSV the model was trained on
    new: Path  # wide CSV with a level shift in cpu
    frame: pd.DataFrame  # the history as a frame
    printed: list[str]  # stdout of the two train commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`anomaly train HISTORY --name m --promote production`, run twice."""
    base = tmp_path_factory.mktemp("registry-cli")
    frame = clean_metrics(900, metrics=("requests", "cpu"), seed=4)
    shifted, _ = inject(frame, "level_shift", "cpu", 800, 30, magnitude=4.0)
    history, new = base / "history.csv", base / "new.csv"
    frame.iloc[:700].to_csv(history, index_label="timestamp")
    shifted.iloc[700:].to_csv(new, index_label="timestamp")
    root = base / "registry"
    printed = []
    for _ in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["train", str(history), "--name", "m", "--promote", "production", "--registry", str(root), *TINY_SETTINGS])
        assert code == 0
        printed.append(out.getvalue())
    return Trained(root, history, new, frame.iloc[:700], printed)


@pytest.fixture
def root(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained registry."""
    return shutil.copytree(trained.root, tmp_path / "registry")


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _events(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "events.csv", dtype={"version": str, "model": str})


def test_train_twice_publishes_two_versions_and_promotes_the_last(trained: Trained) -> None:
    registry = ModelRegistry(trained.root)
    assert registry.versions("m") == ["000001", "000002"]
    assert registry.aliases("m") == {"production": "000002"}
    assert "model: m version 000001 at " in trained.printed[0] and "production -> 000001" in trained.printed[0]
    assert "model: m version 000002 at " in trained.printed[1] and "production -> 000002" in trained.printed[1]
    for version in ("000001", "000002"):
        registry.verify("m", version)
        assert registry.get("m", version).metadata["data"]["rows"] == 700
    assert registry.get("m", "000002").metadata["parent_version"] == "000001"
    assert registry.load("m").detector.config.training.epochs == 3, "--set reaches the published config"


def test_models_list_and_show_print_versions_ranges_thresholds_and_aliases(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--registry", str(trained.root)]) == 0
    listed = capsys.readouterr().out
    assert f"registry: {trained.root}" in listed
    row = next(line for line in listed.splitlines() if line.split()[:1] == ["m"])
    assert row.split()[1:3] == ["2", "000002"] and "production=000002" in row

    assert main(["models", "show", "m", "--registry", str(trained.root)]) == 0
    shown = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in shown if line.split()[0] in ("000001", "000002")}
    assert list(rows) == ["000002", "000001"], "newest first"
    registry = ModelRegistry(trained.root)
    start = trained.frame.index[0].strftime("%Y-%m-%d %H:%M")
    end = trained.frame.index[-1].strftime("%Y-%m-%d %H:%M")
    assert (start, end) == ("2026-01-05 00:00", "2026-01-07 10:15")
    for version, line in rows.items():
        detector = registry.load("m", version).detector
        assert f"{start} .. {end} (700 rows)" in line, line
        assert f"{detector.config.threshold.method} {detector.threshold_:.4g}" in line, line
        assert "requests,cpu" in line
    assert rows["000002"].rstrip().endswith("production")
    assert rows["000001"].rstrip().endswith("-")


def test_detect_by_name_uses_production_or_the_version_or_alias_asked_for(
    trained: Trained, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ModelRegistry(root).promote("m", "000001", alias="staging")
    common = ["--context", str(trained.history), "--registry", str(root)]
    cases = {
        "default": ([], "000002"),
        "version": (["--version", "000001"], "000001"),
        "alias": (["--alias", "production"], "000002"),
        "staging": (["--alias", "staging"], "000001"),
    }
    for label, (extra, expected) in cases.items():
        out = tmp_path / label
        assert main(["detect", str(trained.new), "--name", "m", "--out", str(out), *extra, *common]) == 0, label
        assert f"results in {out}/" in capsys.readouterr().out
        events = _events(out)
        assert len(events) >= 1, f"{label}: the level shift should raise an event"
        assert set(events.version) == {expected}, label
        assert set(events.model) == {"m"}
        assert len(pd.read_csv(out / "scores.csv")) == 200


@pytest.mark.parametrize("pick", [["--version", "000001"], ["--alias", "production"]])
def test_version_or_alias_without_name_is_one_line_and_exit_2(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], pick: list[str]
) -> None:
    out = tmp_path / "out"
    assert main(["detect", str(trained.new), "--out", str(out), *pick, *TINY_SETTINGS]) == 2
    assert "--version and --alias choose a registry version: give --name too" in _one_error_line(capsys)
    assert not out.exists()


def test_detect_with_an_unknown_version_lists_the_versions(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["detect", str(trained.new), "--name", "m", "--version", "000009", "--out", str(out), "--registry", str(trained.root)])
    assert code == 2
    assert "model 'm' has no version 000009; versions: 000001, 000002" in _one_error_line(capsys)
    assert not out.exists()


def test_models_promote_with_a_plain_number(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "promote", "m", "1", "--alias", "staging", "--registry", str(root)]) == 0, capsys.readouterr().err
    assert "m: staging -> 000001" in capsys.readouterr().out
    assert ModelRegistry(root).aliases("m") == {"production": "000002", "staging": "000001"}


def test_models_promote_with_a_full_version(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "promote", "m", "000001", "--alias", "staging", "--registry", str(root)]) == 0
    assert "m: staging -> 000001" in capsys.readouterr().out
    assert ModelRegistry(root).aliases("m") == {"production": "000002", "staging": "000001"}
    assert main(["models", "promote", "m", "000001", "--registry", str(root)]) == 0
    assert "m: production -> 000001" in capsys.readouterr().out
    assert ModelRegistry(root).aliases("m") == {"production": "000001", "staging": "000001"}


def test_models_rollback(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "rollback", "m", "--registry", str(root)]) == 0
    assert "m: production rolled back to 000001" in capsys.readouterr().out
    assert ModelRegistry(root).aliases("m") == {"production": "000001"}
    assert main(["models", "rollback", "m", "--registry", str(root)]) == 2
    assert "alias 'production' of model 'm' has no earlier version to roll back to" in _one_error_line(capsys)
    assert ModelRegistry(root).aliases("m") == {"production": "000001"}


def test_models_prune_keeps_the_newest_and_the_aliased(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(root)
    detector = registry.load("m", "000001").detector
    registry.publish(detector, "m")
    registry.publish(detector, "m")  # 000003, 000004
    assert main(["models", "promote", "m", "000001", "--alias", "staging", "--registry", str(root)]) == 0
    assert main(["models", "prune", "m", "--keep", "1", "--registry", str(root)]) == 0
    assert "m: removed 000003" in capsys.readouterr().out
    assert registry.versions("m") == ["000001", "000002", "000004"]
    assert main(["models", "prune", "m", "--keep", "1", "--registry", str(root)]) == 0
    assert "m: removed nothing" in capsys.readouterr().out
    assert main(["models", "prune", "m", "--keep", "-1", "--registry", str(root)]) == 2
    assert "keep must be an integer >= 0, got -1" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{history}", "--name", "../evil", *TINY_SETTINGS],
        ["train", "{history}", "--name", "../evil", "--promote", "production", *TINY_SETTINGS],
        ["detect", "{new}", "--name", "../evil", "--out", "{out}"],
        ["models", "show", "../evil"],
        ["models", "promote", "../evil", "000001"],
        ["models", "rollback", "../evil"],
        ["models", "prune", "../evil", "--keep", "1"],
        ["models", "promote", "m", "000001", "--alias", "../evil"],
    ],
    ids=["train", "train-promote", "detect", "show", "promote", "rollback", "prune", "alias"],
)
def test_an_invalid_name_is_one_line_exit_2_and_creates_nothing(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    registry = tmp_path / "box" / "registry"
    registry.parent.mkdir()
    values = {"history": str(trained.history), "new": str(trained.new), "out": str(tmp_path / "box" / "out")}
    args = [a.format(**values) for a in argv] + ["--registry", str(registry)]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "invalid model name '../evil'" in line or "invalid alias '../evil'" in line, line
    assert list((tmp_path / "box").iterdir()) == [], "nothing may be created, inside or beside the registry"


def test_the_environment_variable_names_the_registry(
    trained: Trained, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # so ./models is not what is found
    monkeypatch.setenv("ANOMALY_REGISTRY", str(root))

    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"registry: {root}" in listed and "production=000002" in listed

    assert main(["models", "promote", "m", "000001", "--alias", "staging"]) == 0
    assert ModelRegistry(root).aliases("m")["staging"] == "000001"

    out = tmp_path / "out"
    assert main(["detect", str(trained.new), "--name", "m", "--context", str(trained.history), "--out", str(out)]) == 0
    assert set(_events(out).version) == {"000002"}

    other = tmp_path / "given"
    assert main(["models", "list", "--registry", str(other)]) == 0, "--registry wins over the variable"
    assert "(no models)" in capsys.readouterr().out
    assert list(workdir.iterdir()) == [], "nothing written to ./models"


def test_models_list_and_show_json_are_the_rows_of_the_tables(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ["--registry", str(trained.root)]
    assert main(["models", "list", "--json", *registry]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"model": "m", "versions": 2, "latest": "000002", "created": listed[0]["created"],
                       "aliases": "production=000002", "status": "ok"}]  # fmt: skip
    assert main(["models", "show", "m", "--json", *registry]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [row["version"] for row in shown] == ["000002", "000001"], "newest first, as the text"
    assert [row["aliases"] for row in shown] == ["production", "-"]
    assert all(row["data"] == "2026-01-05 00:00 .. 2026-01-07 10:15 (700 rows)" and row["status"] == "ok" for row in shown)
    assert main(["models", "list", "--json", "--registry", str(trained.root.parent / "empty")]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_detect_json_gives_the_counts_and_files(trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["detect", str(trained.new), "--name", "m", "--context", str(trained.history), "--out", str(out), "--json"]
    assert main([*argv, "--registry", str(trained.root)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {
        "events": len(_events(out)),
        "points": len(pd.read_csv(out / "scores.csv")),
        "out": str(out),
        "files": [str(out / name) for name in ("scores.csv", "events.csv", "events.json")],
    }
    assert document["events"] >= 1 and document["points"] == 200


def _flags(out: Path) -> int:
    return int(pd.read_csv(out / "scores.csv")["flag"].sum())


def test_policy_set_show_history_rollback_round_trip(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(root)
    trained_policy = registry.load("m").detector.policy
    policy = ["models", "policy"]
    where = ["--registry", str(root)]
    assert main([*policy, "show", "m", *where]) == 0
    assert capsys.readouterr().out.startswith("m: as trained (no policy record")
    assert main([*policy, "history", "m", *where]) == 0
    assert "m: no policy records" in capsys.readouterr().out

    first = ["--set", "threshold.method=quantile", "--set", "threshold.quantile=0.5", "--note", "more alerts"]
    assert main([*policy, "set", "m", *first, *where]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("m: policy p1 (threshold.method spot -> quantile, threshold.quantile 0.99 -> 0.5)"), printed
    assert registry.policy("m").policy == trained_policy.replace(threshold={"method": "quantile", "quantile": 0.5})

    assert main([*policy, "show", "m", *where]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("m: policy p1, set ") and shown[0].endswith("note: more alerts")
    assert {"  threshold.method = quantile", "  threshold.quantile = 0.5", "  scoring.smoothing_time = null",
            "  events.merge_gap = 12"} <= set(shown)  # fmt: skip
    assert len(shown) == 1 + sum(len(section) for section in trained_policy.to_dict().values())

    assert main([*policy, "set", "m", "--set", "events.merge_gap=3", *where]) == 0
    assert "m: policy p2 (events.merge_gap 12 -> 3)" in capsys.readouterr().out
    assert registry.policy("m").policy.threshold.method == "quantile", "built on the current record"

    assert main([*policy, "history", "m", *where]) == 0
    history = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in history] == ["p1", "p2"]
    assert history[0].split()[3:] == ["-", "more", "alerts"] and history[1].split()[3:] == ["current", "-"]

    assert main([*policy, "rollback", "m", *where]) == 0
    assert "m: policy rolled back to p1" in capsys.readouterr().out
    assert registry.policy("m").id == 1
    assert main([*policy, "rollback", "m", *where]) == 0
    assert "m: policy rolled back to as trained" in capsys.readouterr().out
    assert registry.policy("m") is None
    assert main([*policy, "rollback", "m", *where]) == 2
    assert "model 'm' has no policy to roll back" in _one_error_line(capsys)
    assert registry.versions("m") == ["000001", "000002"], "no policy command publishes a version"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--set", "training.epochs=5"], "--set 'training.epochs': 'training' is not a policy section (scoring, threshold, events)"),
        (["--set", "window.size=8", "--set", "threshold.k=3"], "'window' is not a policy section"),
        (["--set", "threshold.k=-1"], "threshold.k must be"),
        (["--set", "threshold.nope=1"], "nope"),
        (["--set", "threshold.k"], "--set expects SECTION.KEY=VALUE, got 'threshold.k'"),
    ],
)
def test_policy_set_refuses_model_sections_and_bad_values(
    root: Path, capsys: pytest.CaptureFixture[str], change: list[str], message: str
) -> None:
    assert main(["models", "policy", "set", "m", *change, "--registry", str(root)]) == 2
    assert message in _one_error_line(capsys)
    assert ModelRegistry(root).policy_history("m") == []


def test_policy_commands_name_an_unknown_model(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in (["show", "nope"], ["history", "nope"], ["set", "nope", "--set", "threshold.k=3"]):
        assert main(["models", "policy", *action, "--registry", str(root)]) == 2
        assert "no model named 'nope'" in _one_error_line(capsys), action


def test_a_policy_set_from_the_cli_changes_what_detect_flags_without_a_new_version(
    trained: Trained, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def detect(label: str) -> Path:
        out = tmp_path / label
        argv = ["detect", str(trained.new), "--name", "m", "--context", str(trained.history), "--out", str(out)]
        assert main([*argv, "--registry", str(root), "-q"]) == 0, capsys.readouterr().err
        return out

    registry = ModelRegistry(root)
    before = detect("before")
    change = ["--set", "threshold.method=quantile", "--set", "threshold.quantile=0.5"]
    assert main(["models", "policy", "set", "m", *change, "--registry", str(root)]) == 0
    looser = detect("looser")
    assert _flags(looser) > _flags(before) + 50, (_flags(before), _flags(looser))
    assert registry.versions("m") == ["000001", "000002"] and registry.aliases("m") == {"production": "000002"}
    assert set(_events(looser).version) == {"000002"}

    assert main(["models", "policy", "rollback", "m", "--registry", str(root)]) == 0
    assert _flags(detect("after")) == _flags(before), "back as trained: the same flags as before"
