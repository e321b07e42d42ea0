"""The ``anomaly`` command: train, detect, generate; exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from anomaly.cli import main
from anomaly.evaluation.synthetic import clean_metrics, inject
from tests.conftest import TINY_SETTINGS



@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """History (wide CSV) and new data with a level shift (long Parquet)."""
    root = tmp_path_factory.mktemp("cli")
    frame = clean_metrics(900, metrics=("requests", "cpu"), seed=4)
    shifted, _ = inject(frame, "level_shift", "cpu", 800, 30, magnitude=4.0)
    history, new = root / "history.csv", root / "new.parquet"
    frame.iloc[:700].to_csv(history, index_label="timestamp")
    long = shifted.iloc[700:].reset_index().melt(id_vars="timestamp", var_name="metric", value_name="value")
    long.to_parquet(new, index=False)
    return {"root": root, "history": history, "new": new}


def test_train_then_detect_with_the_saved_model(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model, out = files["root"] / "model", files["root"] / "out"
    assert main(["train", str(files["history"]), "--out", str(model), *TINY_SETTINGS]) == 0
    assert (model / "weights.pt").is_file() and (model / "config.json").is_file()
    assert json.loads((model / "config.json").read_text())["training"]["epochs"] == 3

    code = main(["detect", str(files["new"]), "--model", str(model), "--context", str(files["history"]), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "scores.csv") in printed and str(out / "events.csv") in printed

    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 200, "one row per input timestamp"
    assert {"timestamp", "requests", "cpu", "anomaly_score", "flag"} <= set(scores.columns)
    events = pd.read_csv(out / "events.csv")
    assert list(events.columns[:6]) == ["start", "end", "metric", "peak_score", "threshold", "severity"]
    shift = events[(events.start <= "2026-01-07T22:25:00Z") & (events.end >= "2026-01-07T20:00:00Z")]
    assert len(shift) >= 1 and "cpu" in shift.iloc[0].metric
    document = json.loads((out / "events.json").read_text())
    assert document["schema_version"] == 1
    assert len(document["events"]) == len(events)
    assert document["events"][0]["metrics"] == events.iloc[0].metric.split(",")


def test_detect_without_a_model_fits_on_the_data(files: dict[str, Path]) -> None:
    out = files["root"] / "fit-and-detect"
    assert main(["detect", str(files["history"]), "--out", str(out), *TINY_SETTINGS]) == 0
    assert len(pd.read_csv(out / "scores.csv")) == 700


def test_config_file_is_used(files: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "detector.yaml"
    config.write_text("window: {size: 24, score_stride: 4}\nmodel: {hidden_size: 8}\ntraining: {epochs: 1}\n")
    assert main(["train", str(files["history"]), "--out", str(tmp_path / "m"), "--config", str(config)]) == 0
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["window"]["size"] == 24 and saved["model"]["hidden_size"] == 8


def test_generate_writes_data_and_incident_labels(tmp_path: Path) -> None:
    out = tmp_path / "sample.csv"
    assert main(["generate", "--out", str(out), "--points", "3000", "--metrics", "cpu,disk_io"]) == 0
    data = pd.read_csv(out)
    assert list(data.columns) == ["timestamp", "cpu", "disk_io"] and len(data) == 3000
    labels = pd.read_csv(tmp_path / "sample.incidents.csv")
    assert len(labels) == 7 and set(labels.metric) <= {"cpu", "disk_io"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detect", "{missing}", "--out", "{out}"], "data file not found"),
        (["train", "{bad}", "--out", "{out}"], "non-numeric value 'oops' in column 'cpu'"),
        (["train", "{history}", "--out", "{out}", "--set", "training.epochs=0"], "training.epochs must be an integer >= 1, got 0"),
        (["train", "{history}", "--out", "{out}", "--set", "nonsense"], "--set expects SECTION.KEY=VALUE"),
        (["detect", "{history}", "--out", "{out}", "--model", "{missing}"], "model folder not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,cpu\n2026-01-01 00:00,1\n2026-01-01 00:01,oops\n")
    paths = {"missing": tmp_path / "nope.csv", "out": tmp_path / "o", "bad": bad, "history": files["history"]}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_debug_flag_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "detect", str(tmp_path / "nope.csv"), "--out", str(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_help_and_error(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("anomaly")
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("train", "detect", "generate", "demo", "Typical use"):
        assert word in help_text
    detect_help = subprocess.run([exe, "detect", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--model" in detect_help and "--context" in detect_help
    failed = subprocess.run([exe, "train", str(tmp_path / "x.csv"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip() == f"error: data file not found: '{tmp_path / 'x.csv'}'"


def test_report_writes_the_workspaces_alert_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace = tmp_path / "data"
    workspace.mkdir()
    assert main(["report", str(workspace)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0 new alerts · 0 ongoing · 0 resolved"
    html = Path(lines[3].split(maxsplit=1)[1])
    assert lines[3].startswith("html:") and html.parent == workspace / "reports" and "No new anomalies." in html.read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert f"workspace '{tmp_path / 'missing'}' is not a folder" in capsys.readouterr().err
