"""The replay tool (anomaly.evaluation.replay, benchmarks/replay.py): a replay of recorded reconstructions gives what a benchmark run of the same settings gives.

The tuning of the defaults rests on this: a replay under a setting must equal
a real run with that setting, or the figures it prints mean nothing. Each
protocol is recorded once on the tiny corpus of ``test_benchmark`` and
replayed against real runs, with the recorded settings and with other ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly.core.detector import context_points
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.reconstruction import reconstruct
from anomaly.evaluation.benchmark import Benchmark, scores_table
from anomaly.evaluation.corpus import BenchmarkError, load_corpus, read_series
from anomaly.evaluation.replay import load, record, replay, replay_detection, scored_from
from benchmarks.replay import main
from tests.test_benchmark import BASELINED, per_file, sine, standard_corpus, write_corpus

# What the replays change: a lower cut, a shorter merge gap and other smoothing and errors,
# so events, alerts and their counts move (checked below) and must still match real runs.
CHANGED = {
    "scoring": {"error": "power", "error_power": 1.5, "smoothing_span": 3, "baseline": 40},
    "threshold": {"k": 2.5},
    "events": {"merge_gap": 4},
}
SETTINGS = [f"{section}.{key}={value}" for section, values in CHANGED.items() for key, value in values.items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module", params=["batch", "stream"])
def recorded(request: pytest.FixtureRequest, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    protocol = request.param
    out = tmp_path_factory.mktemp(f"record-{protocol}")
    assert len(record(corpus, protocol, out, BASELINED)) == 3
    return protocol, out


def real(corpus: Path, protocol: str, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    config = BASELINED.replace(**changes) if changes else BASELINED
    return Benchmark(corpus, tmp_path / "real", protocol, config, jobs=1).run(progress=False)


def test_a_replay_of_the_recorded_settings_is_the_real_run(recorded: tuple[str, Path], corpus: Path, tmp_path: Path) -> None:
    protocol, folder = recorded
    assert per_file(replay(folder)) == per_file(real(corpus, protocol, tmp_path))


def test_a_replay_under_other_settings_is_a_real_run_with_them(recorded: tuple[str, Path], corpus: Path, tmp_path: Path) -> None:
    protocol, folder = recorded
    replayed = replay(folder, SETTINGS)
    assert per_file(replayed) == per_file(real(corpus, protocol, tmp_path, **CHANGED))
    assert per_file(replayed) != per_file(replay(folder)), "the settings move the results, so the comparison means something"


def test_every_replayed_score_is_the_run_s_even_when_many_points_leave_the_baseline(
    recorded: tuple[str, Path], corpus: Path, tmp_path: Path
) -> None:
    """At 1 sigma many points stay out of later baselines, the setting where a stream chunk's
    scores can depend on its context's first points; every replayed score must still be the
    run's. (On this small corpus it passes without rebuilding those points too: the next test
    is the one that tells them apart.)"""
    protocol, folder = recorded
    held_out = {"scoring": {"baseline_exclude": 1.0, "baseline_hold": "30min"}}
    real(corpus, protocol, tmp_path, **held_out)
    config = BASELINED.replace(**held_out)
    for file in load_corpus(corpus):
        replayed = replay_detection(load(folder / file.category / f"{file.stem}.npz"), protocol, config)
        table = scores_table(read_series(file.path), replayed)
        run = pd.read_csv(tmp_path / "real" / file.category / f"{file.stem}.scores.csv")
        # the run's float32 reconstructions and the replay's stored ones agree to about 1e-4
        np.testing.assert_allclose(table.anomaly_score, run.anomaly_score, rtol=1e-3, atol=1e-6, err_msg=file.key)


def test_a_stream_replay_reads_each_chunk_s_context_as_the_run_reconstructed_it(corpus: Path, tmp_path: Path) -> None:
    """A chunk's context starts ``context_points`` back, so its first window-1 points take that
    window's reconstruction; the recording's differ there (they take the windows ending at them)."""
    record(corpus, "stream", tmp_path / "rec", BASELINED, patterns=["cat_a/shift.csv"])
    recording = load(tmp_path / "rec" / "cat_a" / "shift.npz")
    size, keep = BASELINED.window.size, context_points(BASELINED, recording.frame.freq)
    causal = dataclasses.replace(BASELINED.window, aggregate="last")
    heads_differ = []
    for model in recording.models:
        a = max(0, model.trained - keep)
        net = LSTMAutoencoder(1, BASELINED.model)
        net.load_state_dict({name: torch.from_numpy(w) for name, w in (model.weights or {}).items()})
        expected = reconstruct(net, model.scaled[a : model.stop], causal, torch.device("cpu"))
        np.testing.assert_allclose(scored_from(model, a, BASELINED), expected, rtol=1e-6, atol=1e-7)
        heads_differ.append(a > 0 and not np.allclose(model.reconstruction[a : a + size - 1], expected[: size - 1], atol=1e-4))
    assert any(heads_differ), "some chunk's context starts inside the file, where the recording's reconstruction differs"


def test_a_setting_that_changes_reconstructions_is_refused_by_name(recorded: tuple[str, Path]) -> None:
    _, folder = recorded
    with pytest.raises(BenchmarkError, match=r"window\.size changes the reconstructions \(16 recorded, 32 asked\)"):
        replay(folder, ["window.size=32"])


def test_recording_again_skips_recorded_files_and_refuses_other_settings(recorded: tuple[str, Path], corpus: Path) -> None:
    protocol, folder = recorded
    assert record(corpus, protocol, folder, BASELINED) == []
    with pytest.raises(BenchmarkError, match="another protocol, corpus or configuration"):
        record(corpus, protocol, folder, BASELINED.replace(threshold={"k": 3.0}))


def test_the_command_line_prints_the_summary_table(recorded: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, folder = recorded
    assert main(["score", str(folder), "--set", "threshold.k=3.5"]) == 0
    out = capsys.readouterr().out
    assert "| cat_a | 2 | 2 |" in out and "| **overall** | 3 |" in out
    assert main(["score", str(folder / "nothing-here")]) == 2
    assert "holds no recording" in capsys.readouterr().err


def test_a_stream_file_too_short_for_a_chunk_replays_as_its_run(tmp_path: Path) -> None:
    """A file of one window is all training for the first model: recorded, replayed, never alerting."""
    size = BASELINED.window.size
    corpus = write_corpus(tmp_path / "corpus", {"s/short.csv": (sine(size), [])})
    record(corpus, "stream", tmp_path / "rec", BASELINED)
    summary = replay(tmp_path / "rec")
    assert per_file(summary) == per_file(real(corpus, "stream", tmp_path))
    assert summary["overall"]["events"] == 0
