"""Detection quality on a labelled corpus in the NAB layout, in two protocols.

A corpus is ``data/<category>/<file>.csv`` (``timestamp,value``) with
``labels/combined_windows.json`` mapping ``"<category>/<file>.csv"`` to its
anomaly windows. Every file is run with the same configuration; only what
the data itself says (its interval, its length) varies per file.

- **batch**: fit on the whole file and detect in it, as Orion's published
  benchmark runs NAB;
- **stream**: causal, as the scheduled flows run: fit on the first 15% (NAB's
  probationary period), then score the rest in time order, refitting on all
  the data seen so far whenever it has grown by half since the last fit.
  Scores use the causal ``last`` reconstruction, gaps are forward-filled, and
  each point is scored by a model and threshold fitted before it, so no point
  is ever scored with knowledge of later points.

Each file writes ``<category>/<stem>.events.csv``, ``.scores.csv`` and
``.result.json`` (written last, so a file with one is finished: an
interrupted run resumes from the rest). ``summary.json`` and ``summary.md``
hold event precision/recall/F1 (Orion's overlap rule), the NAB standard
score of the alerts, and seconds per file, per category and overall.

A file that fails (unreadable, too few points, anything it raises) never
aborts the run: its error's class and message are recorded in the summary
(``failures``, and a count per category), it is left out of the figures,
and the other files run on. It writes no ``.result.json``, so a rerun
tries it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from anomaly.core.config import DetectorConfig
from anomaly.core.data import MetricFrame, grid_slots, normalise
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.core.events import find_runs, outside_points
from anomaly.core.fileio import atomic_write_json, atomic_write_text, read_json
from anomaly.core.stream import StreamState, score_step
from anomaly.evaluation.corpus import BenchmarkError, CorpusFile, load_corpus, read_series
from anomaly.evaluation.metrics import (
    EventScores,
    NabScore,
    intervals,
    nab_score,
    probation_length,
    score_events,
)

Protocol = Literal["batch", "stream", "stream-daily"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
#: How often a stream protocol refits: ``stream`` when the history has grown by :data:`GROWTH`,
#: ``stream-daily`` once a day of the file's time, as the daily train flow does.
REFIT_EVERY: dict[str, pd.Timedelta | None] = {"stream": None, "stream-daily": pd.Timedelta("1D")}
RESULT_VERSION = 1
STAMP = "%Y-%m-%d %H:%M:%S"  # NAB's timestamp format (UTC)
GROWTH = 1.5  # stream: refit when the history seen has grown by half since the last fit
MESSAGE_CHARS = 300  # a failed file's message in the summary: one line, cut to this length

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileResult:
    """What one file contributes to the summary (its ``.result.json``)."""

    key: str
    category: str
    rows: int
    events: int
    seconds: float
    event_scores: EventScores
    nab: NabScore

    def to_dict(self) -> dict[str, Any]:
        nab = self.nab
        return {
            "version": RESULT_VERSION,
            "key": self.key,
            "category": self.category,
            "rows": self.rows,
            "events": self.events,
            "seconds": self.seconds,
            "event_scores": {"tp": self.event_scores.tp, "fp": self.event_scores.fp, "fn": self.event_scores.fn},
            "nab": {"raw": nab.raw, "windows": nab.windows, "tp": nab.tp, "fp": nab.fp, "fn": nab.fn},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        return cls(
            key=data["key"],
            category=data["category"],
            rows=int(data["rows"]),
            events=int(data["events"]),
            seconds=float(data["seconds"]),
            event_scores=EventScores(**data["event_scores"]),
            nab=NabScore(**data["nab"]),
        )


@dataclass(frozen=True)
class FileFailure:
    """A file that could not be run: its error, recorded in the summary instead of aborting the run."""

    key: str
    category: str
    error: str  # the exception's class name
    message: str  # its message, on one line
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "error": self.error, "message": self.message, "seconds": self.seconds}


Outcome = FileResult | FileFailure


# -- one file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """A file's outcome on the grid: score in [0, 1], flags, alert onsets and events."""

    grid: pd.DatetimeIndex
    freq: pd.Timedelta
    score: np.ndarray  # in [0, 1]; 0.5 is the threshold
    flags: np.ndarray  # inside an event
    onsets: np.ndarray  # where an alert fires
    events: pd.DataFrame  # start, end, score


#: Called with each fitted detector, the file's grid and the row its scores were used up to
#: (it was fitted on the rows before ``detector.training_data_["rows"]``): how
#: ``benchmarks/replay.py`` records reconstructions without repeating the protocols.
Observer = Callable[[Any, MetricFrame, int], None]


def detect_batch(series: pd.DataFrame, config: DetectorConfig, observe: Observer | None = None) -> Detection:
    """Fit on the whole series and detect in it (Orion's protocol for NAB)."""
    frame = normalise(series, config.preprocess)
    detector = LSTMAutoencoderDetector(config).fit(frame, progress=False)
    if observe:
        observe(detector, frame, len(frame))
    score = detector.decision_scores_.to_numpy(dtype=np.float64)  # fit scored the whole file already
    outside, lookback = outside_points(detector.training_deviation()), int(config.policy.lookback(frame.freq) / frame.freq)
    runs = find_runs(detector.labels_.to_numpy(dtype=bool), score, detector.threshold_, config.events, outside, lookback)
    ratio = score / max(detector.threshold_, 1e-12)
    return detection(frame, ratio, runs, [a for a, _ in runs])


def stream_config(config: DetectorConfig) -> DetectorConfig:
    """The stream protocol's variant of a configuration: causal reconstructions, gaps carried forward."""
    return config.replace(window={"aggregate": "last"}, preprocess={"fill_method": "ffill"})


@dataclass(frozen=True)
class Fit:
    """A model and the rows ``[start, stop)`` of a file it scores, in a stream."""

    detector: LSTMAutoencoderDetector
    version: str
    start: int
    stop: int


def detector_of(protocol: str) -> Callable[[pd.DataFrame, DetectorConfig, Observer | None], Detection]:
    """The detection a protocol runs on one file."""
    if protocol == "batch":
        return detect_batch
    every = REFIT_EVERY[protocol]
    return lambda series, config, observe=None: detect_stream(series, config, observe, every=every)


def detect_stream(
    series: pd.DataFrame, config: DetectorConfig, observe: Observer | None = None, *, every: pd.Timedelta | None = None
) -> Detection:
    """Causal detection: fit on the probationary part, then score forward, refitting as history grows (or ``every`` so long)."""
    config = stream_config(config)
    first = probation_length(len(series))
    head = normalise(series.iloc[: max(first, 2)], config.preprocess)  # the interval, from the past only
    frame = normalise(series, config.preprocess, freq=head.freq)
    live = int(frame.index.searchsorted(series["timestamp"].iloc[first - 1], side="right")) if first else 0
    fitted_until = min(max(live, config.window.size), len(frame))  # in-sample for the first model: never alerts
    detector = LSTMAutoencoderDetector(config).fit(rows(frame, 0, fitted_until), progress=False)
    ratio = np.zeros(len(frame))
    ratio[:fitted_until] = detector.decision_scores_.to_numpy() / max(detector.threshold_, 1e-12)
    if observe and fitted_until == len(frame):
        observe(detector, frame, fitted_until)
    step = None if every is None else max(1, int(every / frame.freq))
    scored, alerts = score_stream(frame, _refits(frame, config, detector, fitted_until, step), observe)
    ratio[fitted_until:] = scored[fitted_until:]
    at = frame.index.get_indexer
    runs = list(zip(at(alerts["start"]).tolist(), (at(alerts["end"]) + 1).tolist()))
    return detection(frame, ratio, runs, at(alerts["onset"]).tolist())


def _refits(
    frame: MetricFrame, config: DetectorConfig, detector: LSTMAutoencoderDetector, fitted_until: int, step: int | None = None
) -> Iterator[Fit]:
    """The stream's models: each scores until the history has grown by :data:`GROWTH` (or by ``step`` rows), then a fit on all of it."""
    version = 1
    while fitted_until < len(frame):  # fitted_until >= window.size >= 2, so each chunk has a point
        stop = min(len(frame), fitted_until + step if step else math.ceil(fitted_until * GROWTH))
        yield Fit(detector, f"{version:06d}", fitted_until, stop)
        if stop < len(frame):
            detector = LSTMAutoencoderDetector(config).fit(rows(frame, 0, stop), progress=False)
            version += 1
        fitted_until = stop


def score_stream(
    frame: MetricFrame, fits: Iterable[Fit], observe: Observer | None = None, *, model: str = ""
) -> tuple[np.ndarray, pd.DataFrame]:
    """Score each fit's rows in turn as the scheduled score runs do (:func:`anomaly.core.stream.score_step`).

    Returns each row's score over its threshold (0 where nothing scored it)
    and the alerts raised (named for ``model``), one row per alert as its
    last update left it (:data:`anomaly.core.events.ALERT_COLUMNS`).
    """
    ratio = np.zeros(len(frame))
    state, parts = StreamState(), []
    for fit in fits:
        new, context = rows(frame, fit.start, fit.stop), rows(frame, 0, fit.start)
        step = score_step(fit.detector, new, context=context, state=state, model=model, version=fit.version)
        ratio[fit.start : fit.stop] = step.scores.score.to_numpy(dtype=np.float64) / max(step.scores.threshold, 1e-12)
        parts.append(step.alerts)
        state = step.state
        if observe:
            observe(fit.detector, frame, fit.stop)
    alerts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "start", "end", "onset"])
    return ratio, alerts.drop_duplicates("id", keep="last").sort_values("start", kind="stable").reset_index(drop=True)


def rows(frame: MetricFrame, a: int, b: int) -> MetricFrame:
    """Rows ``[a, b)`` of a frame."""
    return MetricFrame(frame.values.iloc[a:b], frame.filled.iloc[a:b], frame.freq)


def detection(frame: MetricFrame, ratio: np.ndarray, runs: list[tuple[int, int]], onsets: Sequence[int]) -> Detection:
    """Bound the score to [0, 1] (``r / (1 + r)`` of its ratio to the threshold) and describe the events."""
    ratio = np.nan_to_num(np.clip(ratio, 0.0, None), nan=0.0, posinf=1e12)
    score = ratio / (1.0 + ratio)
    flags = np.zeros(len(frame), dtype=bool)
    alert = np.zeros(len(frame), dtype=bool)
    rows = []
    for (a, b), onset in zip(runs, onsets):
        flags[a:b] = True
        alert[onset] = True
        rows.append({"start": frame.index[a], "end": frame.index[b - 1], "score": float(score[a:b].max())})
    events = pd.DataFrame(rows, columns=["start", "end", "score"])
    return Detection(frame.index, frame.freq, score, flags, alert, events)


def input_rows(detection: Detection, stamps: pd.Series) -> np.ndarray:
    """Grid position of every input row (the slot it was binned into)."""
    slots = grid_slots(pd.DatetimeIndex(stamps), detection.freq)
    return np.asarray(detection.grid.get_indexer(slots))


def scores_table(series: pd.DataFrame, detection: Detection) -> pd.DataFrame:
    """One row per input row, in input order: its slot's score and flag, and the alert on the first row of an onset slot."""
    at = input_rows(detection, series["timestamp"])
    label = detection.onsets[at].copy()
    label[pd.Series(at).duplicated().to_numpy()] = False  # several rows in one slot alert once
    return pd.DataFrame(
        {
            "timestamp": series["timestamp"].dt.strftime(STAMP),
            "value": series["value"],
            "anomaly_score": np.round(detection.score[at], 6),
            "flag": detection.flags[at].astype(int),
            "label": label.astype(int),
        }
    )


def write_events(file: CorpusFile, detection: Detection, out: Path) -> Path:
    """Write a file's events as ``<out>/<category>/<stem>.events.csv``; returns the category's folder."""
    folder = out / file.category
    folder.mkdir(parents=True, exist_ok=True)
    events = detection.events.assign(
        start=[t.strftime(STAMP) for t in detection.events["start"]],
        end=[t.strftime(STAMP) for t in detection.events["end"]],
    )
    atomic_write_text(folder / f"{file.stem}.events.csv", events.to_csv(index=False))
    return folder


def run_file(file: CorpusFile, protocol: Protocol, config: DetectorConfig, out: Path) -> FileResult:
    """Detect in one file, write its events, scores and result, and return the result."""
    started = time.perf_counter()
    series = read_series(file.path)
    detection = detector_of(protocol)(series, config, None)
    table = scores_table(series, detection)
    seconds = time.perf_counter() - started
    folder = write_events(file, detection, out)
    atomic_write_text(folder / f"{file.stem}.scores.csv", table.to_csv(index=False))
    result = file_result(file, series, detection, table, seconds)
    atomic_write_json(folder / f"{file.stem}.result.json", result.to_dict())
    return result


def run_file_isolated(file: CorpusFile, protocol: Protocol, config: DetectorConfig, out: Path) -> Outcome:
    """:func:`run_file`, or what it raised as a :class:`FileFailure`: one file never stops the others."""
    started = time.perf_counter()
    try:
        return run_file(file, protocol, config, out)
    except Exception as exc:  # the isolation boundary: whatever one file raises is that file's result
        return _failure(file, exc, time.perf_counter() - started)


def _failure(file: CorpusFile, exc: BaseException, seconds: float) -> FileFailure:
    message = " ".join(str(exc).split())
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "…"
    log.warning("benchmark file %s failed: %s: %s", file.key, type(exc).__name__, message)
    return FileFailure(file.key, file.category, type(exc).__name__, message, round(seconds, 3))


def file_result(file: CorpusFile, series: pd.DataFrame, detection: Detection, table: pd.DataFrame, seconds: float) -> FileResult:
    """What a detection scores on its file: Orion's overlap counts of its events, NAB of ``table``'s alerts."""
    return FileResult(
        key=file.key,
        category=file.category,
        rows=len(series),
        events=len(detection.events),
        seconds=round(seconds, 3),
        event_scores=score_events(list(file.windows), intervals(detection.events)),
        nab=nab_score(series["timestamp"], table["label"].to_numpy() == 1, list(file.windows)),
    )


# -- the whole corpus -------------------------------------------------------------------------


@dataclass
class Benchmark:
    """A benchmark run: corpus, protocol, configuration and output folder."""

    corpus: Path
    out: Path
    protocol: Protocol = "batch"
    config: DetectorConfig = field(default_factory=DetectorConfig)
    jobs: int = 0  # 0: one per core
    patterns: Sequence[str] = ()

    def run(self, progress: bool | None = None, on_file: Callable[[Outcome], None] | None = None) -> dict[str, Any]:
        """Run the files not finished yet, then write and return the summary of all of them (failures included)."""
        if self.protocol not in PROTOCOLS:
            raise BenchmarkError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        files = load_corpus(self.corpus, self.patterns)
        self.out.mkdir(parents=True, exist_ok=True)
        self._claim_output()
        done: dict[str, Outcome] = {f.key: r for f in files if (r := self._finished(f)) is not None}
        todo = [f for f in files if f.key not in done]
        for result in self._execute(todo, progress):
            done[result.key] = result
            if on_file:
                on_file(result)
        results = [done[f.key] for f in files]
        summary = summarise(results, self.protocol)
        atomic_write_json(self.out / "summary.json", _no_nan(summary))
        atomic_write_text(self.out / "summary.md", summary_markdown(summary))
        return summary

    def _claim_output(self) -> None:
        """Record what this folder holds; refuse to mix results of another protocol or configuration."""
        manifest = {"protocol": self.protocol, "config": self.config.to_dict(), "config_sha256": config_hash(self.config)}
        path = self.out / "benchmark.json"
        if path.exists():
            held = read_json(path, BenchmarkError)
            if held.get("protocol") != self.protocol or held.get("config_sha256") != manifest["config_sha256"]:
                raise BenchmarkError(
                    f"{str(self.out)!r} holds a {held.get('protocol')!r} run of config {str(held.get('config_sha256'))[:12]}, "
                    f"not this {self.protocol!r} run of config {manifest['config_sha256'][:12]}; use another --out to keep both"
                )
            return
        atomic_write_json(path, manifest)

    def _finished(self, file: CorpusFile) -> FileResult | None:
        path = self.out / file.category / f"{file.stem}.result.json"
        try:
            data = json.loads(path.read_text())
            return FileResult.from_dict(data) if data.get("version") == RESULT_VERSION and data.get("key") == file.key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _execute(self, files: list[CorpusFile], progress: bool | None) -> Any:
        """Each file's outcome as it finishes; a file that fails (or whose worker dies) yields a FileFailure."""
        from tqdm.auto import tqdm

        jobs = self.jobs or os.cpu_count() or 1
        bar = tqdm(total=len(files), unit="file", desc=f"{self.protocol} benchmark", disable=None if progress is None else not progress)
        try:
            if jobs == 1 or len(files) <= 1:
                for f in files:
                    yield run_file_isolated(f, self.protocol, self.config, self.out)
                    bar.update()
                return
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(min(jobs, len(files)), mp_context=get_context("spawn"), initializer=worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(run_file_isolated, f, self.protocol, self.config, self.out): f for f in files}
                for future in as_completed(futures):
                    try:
                        yield future.result()
                    except Exception as exc:  # the worker itself died (e.g. killed for memory)
                        yield _failure(futures[future], exc, 0.0)
                    bar.update()
        finally:
            bar.close()


def worker_init(threads: int) -> None:
    """Each worker process gets its share of the cores, so parallel files do not oversubscribe them.

    It also imports ``torch._dynamo`` up front: torch loads it lazily on the
    first optimiser a process builds (about 3 s), a once-per-process start-up
    cost that would otherwise be timed as part of each worker's first file.
    """
    import torch
    import torch._dynamo  # noqa: F401  (see the docstring)

    torch.set_num_threads(threads)


def config_hash(config: DetectorConfig) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()


# -- the summary ---------------------------------------------------------------------------


def summarise(outcomes: Sequence[Outcome], protocol: str) -> dict[str, Any]:
    """Per category (in name order) and overall: event P/R/F1, NAB score, events and seconds per file.

    Failed files count in ``files`` and ``failed`` and are listed in
    ``failures``; the figures are those of the files that ran.
    """
    results = [r for r in outcomes if isinstance(r, FileResult)]
    failures = [r for r in outcomes if isinstance(r, FileFailure)]
    categories = sorted({r.category for r in outcomes})
    rows = {c: _aggregate([r for r in outcomes if r.category == c]) for c in categories}
    return {
        "protocol": protocol,
        "files": len(outcomes),
        "failed": len(failures),
        "categories": rows,
        "overall": _aggregate(list(outcomes)),
        "per_file": {r.key: {"events": r.events, "seconds": r.seconds, **r.event_scores.to_dict(), "nab_raw": r.nab.raw} for r in results},
        "failures": {r.key: r.to_dict() for r in failures},
    }


def _aggregate(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The figures of the files that ran; ``files`` counts every file, ``failed`` those that did not run."""
    results = [r for r in outcomes if isinstance(r, FileResult)]
    events = sum((r.event_scores for r in results), EventScores(0, 0, 0))
    nab = sum((r.nab for r in results), NabScore(0.0, 0, 0, 0, 0))
    seconds = [r.seconds for r in results] or [math.nan]
    has_windows = events.tp + events.fn > 0
    return {
        "files": len(outcomes),
        "failed": len(outcomes) - len(results),
        "windows": events.tp + events.fn,
        "events": sum(r.events for r in results),
        "tp": events.tp,
        "fp": events.fp,
        "fn": events.fn,
        "precision": events.precision if events.tp + events.fp else (math.nan if not has_windows else 0.0),
        "recall": events.recall if has_windows else math.nan,
        "f1": events.f1 if has_windows else math.nan,
        "nab_score": nab.normalised,
        "nab_raw": nab.raw,
        "median_seconds_per_file": statistics.median(seconds),
        "mean_seconds_per_file": statistics.fmean(seconds),
    }


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: an undefined figure (no windows to find) is null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table; '–' where a figure is undefined (no windows to find).

    Failed files show in the table's ``files`` column ("6 (1 failed)") and
    are listed, with their errors, after it.
    """
    failed = summary.get("failed", 0)
    lines = [
        f"# Benchmark, {summary['protocol']} protocol ({summary['files']} files{f', {failed} failed' if failed else ''})",
        "",
        "| category | files | windows | events | tp | fp | fn | precision | recall | F1 | NAB score | median s/file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*summary["categories"].items(), ("**overall**", summary["overall"])]
    for name, r in rows:
        lines.append(
            f"| {name} | {_files(r)} | {r['windows']} | {r['events']} | {r['tp']} | {r['fp']} | {r['fn']} | "
            f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {_fmt(r['nab_score'], 1)} | "
            f"{_fmt(r['median_seconds_per_file'], 1)} |"
        )
    lines += [
        "",
        "Precision, recall and F1 follow Orion's overlap rule (tp/fp/fn summed over a category's files).",
        "The NAB score is the standard profile of the alert onsets (`label`), 0 = no detections, 100 = perfect;",
        "'–' where a category has no anomaly window to find.",
    ]
    if failed:
        lines += ["", f"{failed} file(s) failed and are left out of the figures (a rerun tries them again):", ""]
        lines += [f"- `{key}`: {f['error']}: {f['message']}" for key, f in summary["failures"].items()]
    return "\n".join(lines) + "\n"


def _files(row: dict[str, Any]) -> str:
    failed = row.get("failed", 0)
    return f"{row['files']} ({failed} failed)" if failed else str(row["files"])


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
