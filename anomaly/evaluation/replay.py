"""Replay the labelled-corpus benchmark on stored reconstructions: seconds per configuration, not minutes.

Fitting is what a benchmark run pays for; turning reconstructions into
scores, alerts, F1 and NAB takes seconds. :func:`record` runs the
benchmark's own protocols (the same fits, chunks and refits) on every file
and stores, for each model fitted, its :class:`Reconstruction` of every row
it was trained on or scored, and its weights. :func:`replay` applies the
rest of the pipeline under any policy — through the same
:class:`~anomaly.core.scoring.Scorer`, thresholds and
:class:`~anomaly.core.events.AlertTracker` the detector and the score flow
use — and returns the benchmark's summary.

Replayable: everything a policy holds (``scoring.*``, ``threshold.*``,
``events.*``); anything else changes what the model reconstructs and is
refused. :func:`record` replays each file under the recorded configuration
and refuses to keep a recording whose alerts differ from the run's, so a
replay of the recorded configuration is the benchmark's result. (A stream
chunk is scored with only the context it reads, so the context's first
points take its first window's reconstruction, not the one of the window
ending at each as in the recording; a stream replay rebuilds those points
with the model's stored weights.)
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from anomaly.core.config import POLICY_SECTIONS, DetectorConfig, load_config
from anomaly.core.data import MetricFrame, epoch_nanoseconds
from anomaly.core.detector import LSTMAutoencoderDetector, context_points
from anomaly.core.events import AlertTracker, TrackerState, find_runs, outside_points
from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.reconstruction import Reconstruction, reconstruct
from anomaly.core.scoring import Scorer, deviation, expected_ranges
from anomaly.core.thresholds import FittedThresholds
from anomaly.core.training import torch_threads
from anomaly.evaluation.benchmark import (
    PROTOCOLS,
    Detection,
    FileResult,
    detector_of,
    detection,
    file_result,
    rows,
    scores_table,
    stream_config,
    summarise,
    worker_init,
    write_events,
)
from anomaly.evaluation.corpus import BenchmarkError, CorpusFile, load_corpus, read_series

MANIFEST = "record.json"


@dataclass(frozen=True)
class Model:
    """One fitted model's record: trained on rows ``[0, trained)``, its scores used up to row ``stop``."""

    trained: int
    stop: int
    scaled: np.ndarray  # (stop, m), the model's own scaling
    reconstruction: np.ndarray  # (stop, m)
    weights: dict[str, np.ndarray] | None = None  # the model's state; None in recordings made before it was kept


@dataclass(frozen=True)
class Recording:
    """A file's grid and the models the protocol fitted on it, in time order."""

    frame: MetricFrame
    models: list[Model]
    seconds: float


# -- recording ----------------------------------------------------------------------------------


def record_file(file: CorpusFile, protocol: str, config: DetectorConfig, out: Path) -> str:
    """Run the protocol on one file, keep every model's reconstruction, check the replay equals the run, save."""
    models: list[Model] = []
    observed: dict[str, MetricFrame] = {}

    def observe(detector: LSTMAutoencoderDetector, frame: MetricFrame, stop: int) -> None:
        recon = detector.reconstruct(rows(frame, 0, stop))
        weights = {name: w.detach().cpu().numpy() for name, w in detector.model_.state_dict().items()}
        models.append(Model(int(detector.training_data_["rows"]), stop, recon.scaled, recon.reconstructed, weights))
        observed["frame"] = frame

    series = read_series(file.path)
    started = time.perf_counter()
    run = detector_of(protocol)(series, config, observe)
    recording = Recording(observed["frame"], models, time.perf_counter() - started)
    if not _same(run, replay_detection(recording, protocol, config)):
        raise BenchmarkError(f"{file.key}: the replay of the recorded configuration differs from the run; nothing saved")
    save(recording, out / file.category / f"{file.stem}.npz")
    return file.key


def _same(a: Detection, b: Detection) -> bool:
    events = a.events[["start", "end"]].equals(b.events[["start", "end"]])
    return events and bool(np.array_equal(a.onsets, b.onsets))


def save(recording: Recording, path: Path) -> None:
    """One ``.npz`` per file, written to a temporary name and renamed, so a partial one never counts."""
    frame = recording.frame
    arrays: dict[str, np.ndarray] = {
        "index": np.asarray(epoch_nanoseconds(frame.index)),
        "freq_ns": np.array(frame.freq // pd.Timedelta("1ns")),
        "values": frame.values.to_numpy(dtype=np.float64),
        "filled": frame.filled.to_numpy(dtype=bool),
        "columns": np.array(frame.metrics),
        "seconds": np.array(recording.seconds),
    }
    for j, model in enumerate(recording.models):
        arrays[f"rows_{j}"] = np.array([model.trained, model.stop])
        arrays[f"scaled_{j}"] = model.scaled
        arrays[f"recon_{j}"] = model.reconstruction
        for name, weight in (model.weights or {}).items():
            arrays[f"weights_{j}.{name}"] = weight
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


def load(path: Path) -> Recording:
    """The recording :func:`save` wrote (plain arrays: nothing is unpickled)."""
    with np.load(path, allow_pickle=False) as z:
        index = pd.DatetimeIndex(pd.to_datetime(z["index"], unit="ns", utc=True), name="timestamp")
        columns = [str(c) for c in z["columns"]]
        frame = MetricFrame(
            pd.DataFrame(z["values"], index, columns), pd.DataFrame(z["filled"], index, columns), pd.Timedelta(int(z["freq_ns"]), "ns")
        )
        count = sum(1 for k in z.files if k.startswith("rows_"))
        models = [
            Model(int(z[f"rows_{j}"][0]), int(z[f"rows_{j}"][1]), z[f"scaled_{j}"], z[f"recon_{j}"], _weights(z, f"weights_{j}."))
            for j in range(count)
        ]
        return Recording(frame, models, float(z["seconds"]))


def _weights(z: Any, prefix: str) -> dict[str, np.ndarray] | None:
    weights = {key[len(prefix) :]: z[key] for key in z.files if key.startswith(prefix)}
    return weights or None


# -- replaying ----------------------------------------------------------------------------------


def _reconstruction(frame: MetricFrame, a: int, b: int, scaled: np.ndarray, rebuilt: np.ndarray) -> Reconstruction:
    """Rows ``[a, b)`` of the file as a model saw and rebuilt them."""
    part = rows(frame, a, b)
    return Reconstruction(part.index, part.freq, tuple(part.metrics), scaled, rebuilt, part.missing.to_numpy(), part.filled.to_numpy())


def replay_detection(recording: Recording, protocol: str, config: DetectorConfig) -> Detection:
    """The protocol's detection from the recorded reconstructions under ``config``'s policy."""
    frame = recording.frame
    scorer, policy = Scorer(config.scoring), config.policy
    if protocol == "batch":
        (model,) = recording.models  # one model, trained on and scoring the whole file
        recon = _reconstruction(frame, 0, model.stop, model.scaled, model.reconstruction)
        scores, _ = scorer.score(recon)
        thresholds = FittedThresholds.fit(policy.threshold, scores)
        flags = thresholds.flags(scores)[1]
        outside = outside_points(_deviation(recon, recon, policy.events.band))
        runs = find_runs(flags, scores.score, thresholds.value, policy.events, outside, int(policy.lookback(frame.freq) / frame.freq))
        return detection(frame, scores.score / max(thresholds.value, 1e-12), runs, [a for a, _ in runs])
    config = stream_config(config)
    keep = context_points(config, frame.freq)
    ratio = np.zeros(len(frame))
    tracked = TrackerState()
    parts = []
    for j, model in enumerate(recording.models):
        trained = _reconstruction(frame, 0, model.trained, model.scaled[: model.trained], model.reconstruction[: model.trained])
        training, _ = scorer.score(trained)
        thresholds = FittedThresholds.fit(policy.threshold, training)
        if j == 0:
            ratio[: model.trained] = training.score / max(thresholds.value, 1e-12)
        if model.stop <= model.trained:
            continue  # the first model of a file too short for any chunk
        a = max(0, model.trained - keep)
        recon = _reconstruction(frame, a, model.stop, model.scaled[a : model.stop], scored_from(model, a, config))
        chunk, _ = scorer.score(recon)
        scores = thresholds.apply(chunk, slice(model.trained - a, None))
        far = _deviation(trained, recon, policy.events.band)
        if far is not None:
            scores = dataclasses.replace(scores, deviation=pd.Series(far[model.trained - a :], scores.score.index))
        ratio[model.trained : model.stop] = scores.score.to_numpy() / max(thresholds.value, 1e-12)
        tracker = AlertTracker(policy.events, frame.freq, version=f"{j + 1:06d}", lookback=policy.lookback(frame.freq))
        alerts, tracked = tracker.advance(scores, tracked)
        parts.append(alerts)
    alerts = pd.concat(parts, ignore_index=True).drop_duplicates("id", keep="last") if parts else pd.DataFrame(columns=["start", "end", "onset"])
    at = frame.index.get_indexer
    runs = list(zip(at(alerts["start"]).tolist(), (at(alerts["end"]) + 1).tolist()))
    return detection(frame, ratio, runs, at(alerts["onset"]).tolist())


def _deviation(trained: Reconstruction, scored: Reconstruction, band: float | None) -> np.ndarray | None:
    """``scored``'s deviation in the expected ranges of a model trained on ``trained`` (as the detector computes them)."""
    if band is None:
        return None
    ranges = expected_ranges(trained.residuals(), trained.unobserved, band)
    return deviation(scored.residuals(), scored.unobserved, ranges) if np.isfinite(ranges).any() else None


def replayed_result(
    file: CorpusFile, recording: Recording, protocol: str, config: DetectorConfig, out: Path | None = None
) -> FileResult:
    """What the benchmark would report for the file under ``config`` (with the recorded time); its events written under ``out``."""
    series = read_series(file.path)
    found = replay_detection(recording, protocol, config)
    if out is not None:
        write_events(file, found, out)
    return file_result(file, series, found, scores_table(series, found), recording.seconds)


def scored_from(model: Model, a: int, config: DetectorConfig) -> np.ndarray:
    """The reconstruction of rows ``[a, stop)`` as a chunk score whose context starts at row ``a`` sees it.

    The stream protocol scores causally (``window.aggregate: last``): a point
    takes the window ending at it, but the first ``window.size - 1`` points
    of the context have none and take the first window's reconstruction. The
    recording holds the whole file's, so those points are rebuilt from the
    model's weights, with the windows batched as the run batched them.
    """
    recon = model.reconstruction[a : model.stop].copy()
    if a == 0:
        return recon  # the context starts where the recording does
    if model.weights is None:
        raise BenchmarkError("this stream recording was made before the models' weights were kept: record it again")
    net = LSTMAutoencoder(model.scaled.shape[1], config.model)
    net.load_state_dict({name: torch.from_numpy(w) for name, w in model.weights.items()})
    window = dataclasses.replace(config.window, aggregate="last")
    head = model.scaled[a : a + window.size - 1 + window.score_batch_size]
    with torch_threads(config.training.num_threads):
        first = reconstruct(net, head, window, torch.device("cpu"))
    recon[: window.size - 1] = first[: window.size - 1]
    return recon


def check_replayable(recorded: DetectorConfig, config: DetectorConfig) -> None:
    """Refuse a configuration that differs from the recorded one outside its policy (the reconstructions depend on it)."""
    old, new = recorded.to_dict(), config.to_dict()
    for section, fields in new.items():
        if section in POLICY_SECTIONS:
            continue
        for name, value in fields.items():
            if value != old[section][name]:
                raise BenchmarkError(
                    f"{section}.{name} changes the reconstructions ({old[section][name]!r} recorded, {value!r} asked): record again with it"
                )


def replay(
    folder: Path, overrides: Sequence[str] = (), config_path: Path | None = None, out: Path | None = None
) -> dict[str, Any]:
    """The benchmark summary of a recorded folder under the recorded configuration plus ``overrides``.

    With ``out``, each file's events and a ``benchmark.json`` are written there as a benchmark run
    writes them, so what reads a run's events (the long-series suite's report) reads a replay's.
    """
    manifest = _manifest(folder)
    recorded = DetectorConfig.from_dict(manifest["config"])
    config = load_config(config_path, overrides, base=recorded)
    check_replayable(recorded, config)
    files = load_corpus(manifest["corpus"], manifest["patterns"])
    results = []
    for file in files:
        path = folder / file.category / f"{file.stem}.npz"
        if not path.exists():
            raise BenchmarkError(f"{file.key} has no recording in {str(folder)!r}: run record again to finish it")
        results.append(replayed_result(file, load(path), manifest["protocol"], config, out))
    if out is not None:
        atomic_write_json(out / "benchmark.json", {"protocol": manifest["protocol"], "config": config.to_dict(), "replayed": str(folder)})
    return summarise(results, manifest["protocol"])


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise BenchmarkError(f"{str(folder)!r} holds no recording (no {MANIFEST})")
    return read_json(path, BenchmarkError)


def record(corpus: Path, protocol: str, out: Path, config: DetectorConfig, jobs: int = 1, patterns: Sequence[str] = ()) -> list[str]:
    """Record every file of the corpus not recorded yet; returns the keys recorded by this call."""
    if protocol not in PROTOCOLS:
        raise BenchmarkError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    files = load_corpus(corpus, patterns)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"protocol": protocol, "corpus": str(Path(corpus).resolve()), "patterns": list(patterns), "config": config.to_dict()}
    path = out / MANIFEST
    if path.exists() and read_json(path, BenchmarkError) != manifest:
        raise BenchmarkError(f"{str(out)!r} holds a recording of another protocol, corpus or configuration; use another --out")
    atomic_write_json(path, manifest)
    todo = [f for f in files if not (out / f.category / f"{f.stem}.npz").exists()]
    if jobs <= 1 or len(todo) <= 1:
        return [record_file(f, protocol, config, out) for f in todo]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn"), initializer=worker_init, initargs=(threads,)) as pool:
        return list(pool.map(record_file, todo, [protocol] * len(todo), [config] * len(todo), [out] * len(todo)))
