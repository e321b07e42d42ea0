"""Replay the labelled-corpus benchmark on stored reconstructions: seconds per configuration, not minutes.

Fitting is what a benchmark run pays for; turning reconstructions into
scores, events, alerts, F1 and NAB takes seconds. ``record`` runs the
benchmark's own detection (``anomaly.evaluation.benchmark.detect_batch`` or
``detect_stream``: the same fits, chunks and refits) on every file and
stores, for each model fitted, its scaled input and reconstruction on every
row it was trained on or scored. ``score`` replays the rest of the pipeline
under overrides of the settings that leave reconstructions alone and prints
the benchmark's summary table. The defaults in the README were chosen this
way, and the variants it says were tried and not taken can be re-measured.

    .venv/bin/python benchmarks/replay.py record ../shared/nab-dev --protocol batch --out replay-batch --jobs 2
    .venv/bin/python benchmarks/replay.py score replay-batch --set threshold.k=4.0 --set events.merge_gap=100

Replayable: ``scoring.error``, ``error_power``, ``combine``,
``smoothing_span``, ``smoothing_time``, ``baseline``, ``baseline_floor``,
``baseline_exclude``, ``baseline_hold``, ``baseline_warmup``, and every
``threshold.*`` and ``events.*`` setting. Anything else changes what the
model reconstructs (or how it is trained) and is refused: record again
with it. ``record`` replays each file under the recorded
configuration before saving it and refuses to keep a recording whose events
and alerts differ from the real run's, so a replay of the recorded
configuration is the benchmark's result. (A stream chunk is scored with
only the context it reads, so the context's first points take its first
window's reconstruction, not the one of the window ending at each as in the
recording. With ``scoring.baseline_exclude`` which points those few leave
out of the baseline can reach the chunk, so a stream replay rebuilds them
with the model's stored weights, for whatever context length the replayed
settings need.) The seconds per file a replay prints are the recording's:
the run plus the reconstructions it keeps. Prints figures, never a verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from anomaly.evaluation.benchmark import (
    PROTOCOLS,
    BenchmarkError,
    CorpusFile,
    Detection,
    FileResult,
    _causal_runs,
    _detection,
    _rows,
    _worker_init,
    detect_batch,
    detect_stream,
    file_result,
    load_corpus,
    read_series,
    scores_table,
    summarise,
    summary_markdown,
)
from anomaly.cli import load_config
from anomaly.core.config import DetectorConfig
from anomaly.core.data import MetricFrame, epoch_nanoseconds, grid_phase
from anomaly.core.detector import _model_input, context_points
from anomaly.errors import AnomalyError
from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.core.events import find_runs
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.scoring import against_baseline, combine, point_errors, reconstruct, smooth
from anomaly.core.thresholds import build_threshold
from anomaly.core.training import torch_threads

MANIFEST = "record.json"
#: What a replay may change: everything after the reconstruction.
REPLAYABLE = {
    "scoring": {
        "error",
        "error_power",
        "combine",
        "smoothing_span",
        "smoothing_time",
        "baseline",
        "baseline_floor",
        "baseline_exclude",
        "baseline_hold",
        "baseline_warmup",
    },
    "threshold": None,  # every field
    "events": None,
}


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

    def observe(detector: Any, frame: MetricFrame, stop: int) -> None:
        sub = _rows(frame, 0, stop)
        scaled = detector.scaler_.transform(_model_input(sub))
        cfg = detector.config
        with torch_threads(cfg.training.num_threads):
            recon = reconstruct(detector.model_, scaled, cfg.window, cfg.scoring, detector.device_, phase=grid_phase(sub.index, sub.freq))
        weights = {name: w.detach().cpu().numpy() for name, w in detector.model_.state_dict().items()}
        models.append(Model(int(detector.training_data_["rows"]), stop, scaled, recon, weights))
        observed["frame"] = frame

    series = read_series(file.path)
    started = time.perf_counter()
    detection = (detect_batch if protocol == "batch" else detect_stream)(series, config, observe)
    recording = Recording(observed["frame"], models, time.perf_counter() - started)
    replayed = replay_detection(recording, protocol, config)
    if not _same(detection, replayed):
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
    """The recording :func:`save` wrote."""
    with np.load(path) as z:
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


def combined_scores(scaled: np.ndarray, recon: np.ndarray, missing: np.ndarray, freq: pd.Timedelta, config: DetectorConfig) -> np.ndarray:
    """The detector's combined score of rows scored in one go (no carry): errors, smoothing, baseline."""
    scoring = config.scoring
    errors = point_errors(scaled, recon, scoring.error, scoring.error_power)
    errors[missing] = np.nan
    errors = np.column_stack([errors, combine(errors, scoring.combine)])
    smoothed = smooth(errors, scoring.span_points(freq))
    if scoring.baseline:
        smoothed = against_baseline(smoothed, scoring, freq)[0]
    return smoothed[:, -1]


def _fitted(model: Model, missing: np.ndarray, unobserved: np.ndarray, freq: pd.Timedelta, config: DetectorConfig) -> tuple[np.ndarray, float]:
    """The model's scores of its own training rows, and the combined threshold it fitted on them (unobserved left out)."""
    rows = slice(0, model.trained)
    score = combined_scores(model.scaled[rows], model.reconstruction[rows], missing[rows], freq, config)
    return score, build_threshold(config.threshold).fit(np.where(unobserved[rows], np.nan, score)).threshold_


def replay_detection(recording: Recording, protocol: str, config: DetectorConfig) -> Detection:
    """The protocol's detection from the recorded reconstructions under ``config``."""
    frame = recording.frame
    missing = frame.missing.to_numpy()
    unobserved = (missing | frame.filled.to_numpy()).any(axis=1)
    fitted = [_fitted(model, missing, unobserved, frame.freq, config) for model in recording.models]
    if protocol == "batch":
        ((score, threshold),) = fitted  # one model, trained on and scoring the whole file
        flags = (score > threshold) & ~unobserved
        runs = find_runs(flags, score, threshold, config.events)
        return _detection(frame, score / max(threshold, 1e-12), runs, [a for a, _ in runs])
    first = recording.models[0]
    ratio = np.zeros(len(frame))
    ratio[: first.trained] = fitted[0][0] / max(fitted[0][1], 1e-12)
    keep = context_points(config, frame.freq)
    for model, (_, threshold) in zip(recording.models, fitted):
        if model.stop <= model.trained:
            continue  # the first model of a file too short for any chunk
        a = max(0, model.trained - keep)
        rows = slice(a, model.stop)
        score = combined_scores(model.scaled[rows], scored_from(model, a, config), missing[rows], frame.freq, config)
        ratio[model.trained : model.stop] = score[model.trained - a :] / max(threshold, 1e-12)
    flags = (ratio > 1.0) & ~unobserved
    flags[: first.trained] = False
    alerts = _causal_runs(flags, config.events.merge_gap, config.events.min_length)
    return _detection(frame, ratio, [(a, b) for a, b, _ in alerts], [at for _, _, at in alerts])


def replayed_result(file: CorpusFile, recording: Recording, protocol: str, config: DetectorConfig) -> FileResult:
    """What ``anomaly.evaluation.benchmark.run_file`` would report for the file under ``config`` (with the recorded time)."""
    series = read_series(file.path)
    detection = replay_detection(recording, protocol, config)
    return file_result(file, series, detection, scores_table(series, detection), recording.seconds)


def scored_from(model: Model, a: int, config: DetectorConfig) -> np.ndarray:
    """The reconstruction of rows ``[a, stop)`` as a chunk score whose context starts at row ``a`` sees it.

    The stream protocol scores causally (``aggregate: last``): a point takes
    the window ending at it, but the first ``window.size - 1`` points of the
    context have none and take the first window's reconstruction. The
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
    size, scoring = config.window.size, dataclasses.replace(config.scoring, aggregate="last")
    head = model.scaled[a : a + size - 1 + scoring.batch_size]
    with torch_threads(config.training.num_threads):
        first = reconstruct(net, head, config.window, scoring, torch.device("cpu"))
    recon[: size - 1] = first[: size - 1]
    return recon


def check_replayable(recorded: DetectorConfig, config: DetectorConfig) -> None:
    """Refuse a configuration that differs from the recorded one anywhere a reconstruction depends on."""
    old, new = recorded.to_dict(), config.to_dict()
    for section, fields in new.items():
        allowed = REPLAYABLE.get(section, set())
        for name, value in fields.items():
            if value != old[section][name] and allowed is not None and name not in allowed:
                raise BenchmarkError(
                    f"{section}.{name} changes the reconstructions ({old[section][name]!r} recorded, {value!r} asked): record again with it"
                )


def replay(folder: Path, overrides: Sequence[str] = (), config_path: Path | None = None) -> dict[str, Any]:
    """The benchmark summary of a recorded folder under the recorded configuration plus ``overrides``."""
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
        results.append(replayed_result(file, load(path), manifest["protocol"], config))
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
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)) as pool:
        return list(pool.map(record_file, todo, [protocol] * len(todo), [config] * len(todo), [out] * len(todo)))


# -- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the benchmark's fits and store every model's reconstructions")
    rec.add_argument("corpus", type=Path)
    rec.add_argument("--protocol", choices=PROTOCOLS, default="batch")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--jobs", type=int, default=1, help="files recorded in parallel (keep it equal to the benchmark's --jobs: threads change float rounding)")
    rec.add_argument("--files", action="append", default=[], metavar="GLOB", help="only category/file.csv keys matching (repeatable)")
    rec.add_argument("--config", type=Path, default=None)
    rec.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    play = sub.add_parser("score", help="replay a recording under overrides and print the summary table")
    play.add_argument("folder", type=Path)
    play.add_argument("--config", type=Path, default=None, help="a whole configuration instead of the recorded one")
    play.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            config = load_config(args.config, args.overrides)
            done = record(args.corpus, args.protocol, args.out, config, args.jobs, args.files)
            print(f"recorded {len(done)} files in {args.out}")
        else:
            print(summary_markdown(replay(args.folder, args.overrides, args.config)), end="")
    except AnomalyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
