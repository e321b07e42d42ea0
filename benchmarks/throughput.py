"""Throughput and memory figures for the LSTM-autoencoder detector, on this machine.

Prints figures, never pass/fail verdicts: the point is that a reader can see
what the product does on the hardware at hand, next to what the hardware can
do at best (a dense float32 matmul measured in the same run) and next to a
deliberately naive training loop measured in the same run.

    .venv/bin/python benchmarks/throughput.py            # 100k and 1M points, a few minutes
    .venv/bin/python benchmarks/throughput.py --quick    # 10k and 100k points, smoke run
    .venv/bin/python benchmarks/throughput.py --threads 1 --out bench-output/throughput.json

Everything runs through the public API (``from anomaly import ...``):
training is one epoch of ``LSTMAutoencoderDetector.fit``, timed by its epoch
callback; scoring is ``detector.score``, split into ``normalise``,
``detector.reconstruct`` and the rest by timing those public calls alone, and
``reconstruct`` into the model's forward pass and the aggregation of
overlapping windows by one cProfile run. Series come from
:func:`anomaly.clean_metrics` (``requests`` only, 1-minute points); the long
one is generated once and the short one is its prefix. Other processes on the
machine skew every figure: the load average is printed at the start and at
the end, every figure is the best of ``--repeats`` runs (all runs are
printed), and on a shared 2-core VM identical runs still differ by up to
about 30%, so read differences smaller than that as noise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import ctypes
import gc
import json
import os
import pstats
import re
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from anomaly import DetectorConfig, EpochResult, LSTMAutoencoderDetector, MetricFrame, clean_metrics, normalise

#: The design notes' reference model ("hidden size 64 on windows of 100 ... roughly 1,000 windows/s").
REFERENCE_MODEL = {"hidden_size": 64, "latent_size": 16, "num_layers": 1}
NAIVE_BATCH = 32
MATMUL_SIZE = 2048
#: Points the scoring detector is fitted on: one week of 1-minute points.
FIT_POINTS = 10_080
#: Points of the throw-away fit that warms up kernels and allocators (about 7 training batches).
WARMUP_POINTS = 600


# --------------------------------------------------------------------------- #
# Small measurement helpers
# --------------------------------------------------------------------------- #


def _status_kib(key: str) -> int:
    """A ``VmRSS``/``VmHWM`` figure of this process from /proc, in KiB (0 off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), where that exists.

    Without it, memory freed by earlier stages (training, the previous series)
    stays resident and is silently reused, so a later call shows no RSS
    increase even if it allocates a lot.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssMeter:
    """Peak RSS of one code block, and of the whole process across blocks.

    ``ru_maxrss`` is a high-water mark for the process lifetime, so it cannot
    say how much *one* call added. Linux lets a process reset its mark
    (``5 > /proc/self/clear_refs``); the process-wide peak is kept here before
    each reset so it is still reported correctly at the end.
    """

    def __init__(self) -> None:
        self.process_peak_kib = self._ru_maxrss_kib()
        self.can_reset = self._reset()

    @staticmethod
    def _ru_maxrss_kib() -> int:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux

    def _reset(self) -> bool:
        self.process_peak_kib = max(self.process_peak_kib, self._ru_maxrss_kib(), _status_kib("VmHWM"))
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Yields a dict filled with ``before_mib``, ``peak_mib`` and ``increase_mib`` on exit."""
        result: dict[str, float] = {}
        release_free_memory()
        self._reset()
        before = _status_kib("VmRSS")
        try:
            yield result
        finally:
            peak = _status_kib("VmHWM") if self.can_reset else self._ru_maxrss_kib()
            self.process_peak_kib = max(self.process_peak_kib, peak, self._ru_maxrss_kib())
            result.update(before_mib=before / 1024, peak_mib=peak / 1024, increase_mib=(peak - before) / 1024)

    def peak_mib(self) -> float:
        """Peak RSS of the process so far (``ru_maxrss``, merged over resets)."""
        self._reset()
        return self.process_peak_kib / 1024


def profiled(call: Callable[[], Any]) -> tuple[float, pstats.Stats]:
    """Wall seconds of one ``call()`` under cProfile, and its statistics."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.runcall(call)
    return time.perf_counter() - t0, pstats.Stats(profiler)


def cumulative_seconds(stats: pstats.Stats, where: str, name: str) -> float:
    """Cumulative seconds of the profiled functions called ``name`` in files ending with ``where`` (0 if none ran)."""
    return sum(
        row[3] for (filename, _, function), row in stats.stats.items()  # type: ignore[attr-defined]
        if function == name and filename.replace(os.sep, "/").endswith(where)
    )


def matmul_gflops(size: int, min_seconds: float) -> dict[str, float]:
    """Dense float32 matmul GFLOP/s: the ceiling the LSTM's own matmuls are compared with.

    Best and median of repeated timings after a warm-up; the median is the one
    to compare with training figures taken under the same (possibly shared) load.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    times: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds or len(times) < 5:
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * size**3
    return {
        "size": size,
        "repeats": len(times),
        "best_gflops": flops / min(times) / 1e9,
        "median_gflops": flops / float(np.median(times)) / 1e9,
    }


# --------------------------------------------------------------------------- #
# FLOP model
# --------------------------------------------------------------------------- #

FLOP_FORMULA = (
    "forward FLOPs/window = T * sum_layers[ 2*4*H*(H + I_layer) * directions ]  (encoder)\n"
    "                     + T * sum_layers[ 2*4*H*(H + I_layer) ]               (decoder, latent L in)\n"
    "                     + 2*(H*directions)*L                                 (to_latent, once)\n"
    "                     + T * 2*H*m                                          (head)\n"
    "training FLOPs       = 3 * forward * train windows + forward * validation windows\n"
    "(T = window, H = hidden, L = latent, m = features, I = layer input size;\n"
    " gate non-linearities, MSE, Adam and clipping are not counted)"
)


def forward_flops_per_window(config: DetectorConfig, n_features: int) -> float:
    """Analytic matmul FLOPs of one window through the autoencoder, forward only."""
    model, size = config.model, config.window.size
    h, directions = model.hidden_size, 2 if model.bidirectional else 1
    encoder = decoder = 0.0
    for layer in range(model.num_layers):
        enc_in = n_features if layer == 0 else h * directions
        dec_in = model.latent_size if layer == 0 else h
        encoder += 2 * 4 * h * (h + enc_in) * directions
        decoder += 2 * 4 * h * (h + dec_in)
    per_step = encoder + decoder + 2 * h * n_features
    return size * per_step + 2 * h * directions * model.latent_size


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


def make_frame(n_points: int) -> tuple[pd.DataFrame, float]:
    """The synthetic ``requests`` metric at 1-minute points, and how long it took to build."""
    t0 = time.perf_counter()
    frame = clean_metrics(n_points, freq="1min", metrics=("requests",))
    return frame, time.perf_counter() - t0


def training_configs(threads: int) -> dict[str, DetectorConfig]:
    """The reference and the default model, each trained for one epoch on the CPU with ``threads`` threads."""
    default = DetectorConfig().replace(training={"epochs": 1, "device": "cpu", "num_threads": threads})
    return {"reference": default.replace(model=REFERENCE_MODEL), "default": default}


def validation_windows(train_windows: int, config: DetectorConfig) -> int:
    """About how many windows a fit validates on: ``validation_fraction`` of all, the rest trained on.

    ``History`` counts the training windows only; the few training windows
    dropped for overlapping the first validation window make this a slight
    overestimate (under 1% at the default 2,000 windows).
    """
    fraction = config.training.validation_fraction
    return round(train_windows * fraction / (1 - fraction))


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


@dataclass
class TrainFigure:
    """One measured training run (one epoch)."""

    label: str
    hidden_size: int
    batch_size: int
    train_windows: int
    val_windows: int
    seconds: float
    forward_mflop_per_window: float
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def windows_per_second(self) -> float:
        return self.train_windows / self.seconds

    @property
    def achieved_gflops(self) -> float:
        fwd = self.forward_mflop_per_window * 1e6
        return (3 * fwd * self.train_windows + fwd * self.val_windows) / self.seconds / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "extra"},
            **self.extra,
            "windows_per_second": self.windows_per_second,
            "achieved_gflops": self.achieved_gflops,
        }


def product_training(frame: pd.DataFrame, config: DetectorConfig, label: str) -> tuple[TrainFigure, LSTMAutoencoderDetector]:
    """One epoch of the public ``fit`` on the whole series, timed by its epoch callback.

    Windows/s is the training windows (``history_.windows_seen``) over the
    epoch's seconds (``EpochResult.seconds``), which include the validation
    pass (20% of windows, forward only) as in every fit. The fit's wall time,
    which also covers normalising, scaling and scoring the training data for
    the thresholds, is kept as ``fit_seconds``.
    """
    LSTMAutoencoderDetector(config).fit(frame.iloc[:WARMUP_POINTS], progress=False)  # warm-up, not timed
    epochs: list[EpochResult] = []
    t0 = time.perf_counter()
    detector = LSTMAutoencoderDetector(config).fit(frame, callbacks=[epochs.append], progress=False)
    fit_seconds = time.perf_counter() - t0
    train = detector.history_.windows_seen
    figure = TrainFigure(
        label=label,
        hidden_size=config.model.hidden_size,
        batch_size=config.training.batch_size,
        train_windows=train,
        val_windows=validation_windows(train, config),
        seconds=epochs[0].seconds,
        forward_mflop_per_window=forward_flops_per_window(config, len(detector.metrics_)) / 1e6,
        threads=torch.get_num_threads(),
        extra={"fit_seconds": fit_seconds, "library_windows_per_second": detector.history_.windows_per_second},
    )
    return figure, detector


def _naive_epoch(series: np.ndarray, train: np.ndarray, val: np.ndarray, model: nn.Module, size: int, lr: float) -> None:
    """A simple, reasonable first training loop: the baseline the optimised trainer is judged by.

    ``train`` is already shuffled. Batches of 32 are built with a list
    comprehension over the float64 series, then converted to a float32 tensor;
    validation under ``no_grad`` (not ``inference_mode``) in batches of 32.
    Same model, Adam, MSE and clipping as the library's trainer, so only the
    loop differs.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    model.train()
    for i in range(0, len(train), NAIVE_BATCH):
        batch = [series[s : s + size] for s in train[i : i + NAIVE_BATCH]]
        x = torch.tensor(np.array(batch), dtype=torch.float32).unsqueeze(-1)
        optimiser.zero_grad()
        loss = loss_fn(model(x), x)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
    model.eval()
    with torch.no_grad():
        for i in range(0, len(val), NAIVE_BATCH):
            batch = [series[s : s + size] for s in val[i : i + NAIVE_BATCH]]
            x = torch.tensor(np.array(batch), dtype=torch.float32).unsqueeze(-1)
            loss_fn(model(x), x).item()


def naive_training(detector: LSTMAutoencoderDetector, frame: pd.DataFrame, product: TrainFigure, label: str) -> TrainFigure:
    """The naive loop on as many windows as ``product`` (the fit of ``detector``), timed the same way.

    It trains copies of the fitted model (its shape is what costs time, not
    its weights) on the series the detector's scaler scales, taking its
    windows evenly spaced: the training ones before the last
    ``validation_fraction`` of the series, the validation ones in it.
    """
    cfg = detector.get_config()
    size, lr, seed = cfg.window.size, cfg.training.learning_rate, cfg.training.seed
    series = detector.scaler_.transform(frame.to_numpy(dtype=np.float64))[:, 0].astype(np.float64)  # a naive loop keeps float64
    last = len(series) - size
    cut = int(last * (1 - cfg.training.validation_fraction))
    train = np.linspace(0, max(cut - size, 0), product.train_windows).astype(np.int64)
    val = np.linspace(cut, last, product.val_windows).astype(np.int64)
    order = np.random.default_rng(seed).permutation(train)
    _naive_epoch(series, order[: 8 * NAIVE_BATCH], val[:NAIVE_BATCH], copy.deepcopy(detector.model_), size, lr)  # warm-up
    model = copy.deepcopy(detector.model_)
    t0 = time.perf_counter()
    _naive_epoch(series, order, val, model, size, lr)
    seconds = time.perf_counter() - t0
    return TrainFigure(
        label=label,
        hidden_size=cfg.model.hidden_size,
        batch_size=NAIVE_BATCH,
        train_windows=len(order),
        val_windows=len(val),
        seconds=seconds,
        forward_mflop_per_window=product.forward_mflop_per_window,
        threads=torch.get_num_threads(),
    )


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def fitted_detector(frame: pd.DataFrame, threads: int) -> tuple[LSTMAutoencoderDetector, float]:
    """Default-config detector fitted for one epoch on the first week of the series.

    One epoch is enough: scoring cost does not depend on how well the model
    fits, only on its shape. Returns the detector and the fit time.
    """
    config = DetectorConfig().replace(training={"epochs": 1, "device": "cpu", "num_threads": threads})
    t0 = time.perf_counter()
    detector = LSTMAutoencoderDetector(config).fit(frame.iloc[:FIT_POINTS], progress=False)
    return detector, time.perf_counter() - t0


def score_windows(detector: LSTMAutoencoderDetector, n_points: int) -> int:
    """About how many windows scoring ``n_points`` reconstructs: one every ``score_stride`` points, plus the last."""
    window = detector.get_config().window
    return (n_points - window.size) // window.score_stride + 2


def prepared(detector: LSTMAutoencoderDetector, frame: pd.DataFrame) -> tuple[MetricFrame, float]:
    """``frame`` on the detector's grid (what ``score`` does first), and the seconds ``normalise`` took."""
    t0 = time.perf_counter()
    grid = normalise(frame, detector.get_config().preprocess, freq=detector.freq_)
    return grid, time.perf_counter() - t0


def bench_reconstruct(detector: LSTMAutoencoderDetector, grid: MetricFrame, meter: RssMeter) -> dict[str, float]:
    """``detector.reconstruct`` of a prepared series: seconds, points/s and RSS increase."""
    with meter.measure() as rss:
        t0 = time.perf_counter()
        detector.reconstruct(grid)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "points_per_second": len(grid.index) / seconds, "rss_increase_mib": rss["increase_mib"]}


def reconstruct_split(detector: LSTMAutoencoderDetector, grid: MetricFrame) -> dict[str, float]:
    """Shares of one profiled ``detector.reconstruct``: the model's forward passes, the aggregation, the rest.

    cProfile sees the few large calls of this path (a forward pass per batch
    of windows, an aggregation per chunk of points) at little cost; the rest
    is copying batches out of the window view and chunk bookkeeping.
    """
    total, stats = profiled(lambda: detector.reconstruct(grid))
    model = cumulative_seconds(stats, "anomaly/core/model.py", "forward")
    aggregate = cumulative_seconds(stats, "anomaly/core/windows.py", "aggregate_points")
    return {"model": model / total, "aggregate": aggregate / total, "other": max(0.0, 1 - (model + aggregate) / total)}


def numpy_peak_during_reconstruct(detector: LSTMAutoencoderDetector, grid: MetricFrame) -> float:
    """Peak traced (numpy/Python) memory during ``detector.reconstruct``, in MiB.

    tracemalloc sees numpy's array buffers but not torch's tensors (torch
    allocates outside Python's tracing hooks), so this is the numpy side only.
    Run separately from the timed call because tracing slows allocations.
    """
    release_free_memory()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = detector.reconstruct(grid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return (peak - base) / 2**20


def bench_score(detector: LSTMAutoencoderDetector, frame: pd.DataFrame, meter: RssMeter) -> dict[str, float]:
    """End-to-end ``detector.score`` on the whole series: seconds, points/s and RSS increase."""
    with meter.measure() as rss:
        t0 = time.perf_counter()
        scores = detector.score(frame)
        seconds = time.perf_counter() - t0
    del scores
    return {"seconds": seconds, "points_per_second": len(frame) / seconds, "rss_increase_mib": rss["increase_mib"]}


# --------------------------------------------------------------------------- #
# Running the sections
# --------------------------------------------------------------------------- #


def label_points(n: int) -> str:
    """``100k``/``1M`` style labels for table rows."""
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def print_train(fig: TrainFigure, ceiling: float, runs: list[TrainFigure]) -> None:
    """One line per configuration: the best run, and every run so the spread is visible."""
    every = ", ".join(f"{r.windows_per_second:.0f}" for r in runs)
    print(
        f"  {fig.label:<30} H={fig.hidden_size:<3} batch={fig.batch_size:<3} "
        f"{fig.train_windows} train + {fig.val_windows} val windows in {fig.seconds:6.2f} s "
        f"-> {fig.windows_per_second:5.0f} windows/s (runs: {every}), {fig.achieved_gflops:5.1f} GFLOP/s "
        f"= {100 * fig.achieved_gflops / ceiling:4.1f}% of matmul"
    )


def run_training(frames: dict[int, pd.DataFrame], threads: int, repeats: int, ceiling: float) -> dict[int, dict[str, TrainFigure]]:
    """Reference, default and naive training on every series; best of ``repeats`` interleaved runs.

    Runs are interleaved (reference, default, naive, reference, ...) so a burst
    of load from another process hits all three alike rather than one.
    """
    configs = training_configs(threads)
    out: dict[int, dict[str, TrainFigure]] = {}
    for n, frame in frames.items():
        print(f" {label_points(n)} points (at most {configs['default'].window.max_train_windows} windows per fit):")
        runs: dict[str, list[TrainFigure]] = {"reference": [], "default": [], "naive": []}
        for _ in range(repeats):
            reference, detector = product_training(frame, configs["reference"], "fit, reference")
            runs["reference"].append(reference)
            runs["default"].append(product_training(frame, configs["default"], "fit, DetectorConfig()")[0])
            runs["naive"].append(naive_training(detector, frame, reference, "naive loop, reference"))
        out[n] = {k: max(v, key=lambda f: f.windows_per_second) for k, v in runs.items()}
        for key, fig in out[n].items():
            print_train(fig, ceiling, runs[key])
        fits = ", ".join(f"{k} {min(f.extra['fit_seconds'] for f in runs[k]):.2f} s" for k in ("reference", "default"))
        print(f"  whole fit (also normalising, scaling and scoring the training data), best: {fits}")
        ratio = out[n]["reference"].windows_per_second / out[n]["naive"].windows_per_second
        print(f"  speed-up fit / naive loop (reference model, best runs): {ratio:.2f}x")
    return out


def run_scoring(
    frames: dict[int, pd.DataFrame], threads: int, repeats: int, ceiling: float, meter: RssMeter
) -> tuple[dict[int, dict[str, Any]], float]:
    """Score every series with one detector: best-of-``repeats`` times, largest RSS increase.

    ``score``'s split is the best ``normalise`` and ``detector.reconstruct``
    times, each timed alone, and the rest of the best ``score`` (timed apart,
    so on a busy machine the rest can come out a little below zero: read it
    as about none); ``reconstruct``'s split applies one profiled run's shares
    to its best time.
    """
    detector, fit_seconds = fitted_detector(frames[max(frames)], threads)
    print(f"  detector fitted for 1 epoch on the first {FIT_POINTS} points in {fit_seconds:.1f} s")
    bench_score(detector, frames[min(frames)].iloc[:20_000], meter)  # warm-up
    fwd = forward_flops_per_window(detector.get_config(), len(detector.metrics_))
    out: dict[int, dict[str, Any]] = {}
    for n, frame in frames.items():
        prepare_s = min(prepared(detector, frame)[1] for _ in range(repeats))
        grid, _ = prepared(detector, frame)
        recons, scores = [], []
        for _ in range(repeats):  # interleaved, so a burst of load hits both alike
            recons.append(bench_reconstruct(detector, grid, meter))
            scores.append(bench_score(detector, frame, meter))
        recon, score = min(recons, key=lambda r: r["seconds"]), min(scores, key=lambda r: r["seconds"])
        recon["rss_increase_mib"] = max(r["rss_increase_mib"] for r in recons)
        score["rss_increase_mib"] = max(r["rss_increase_mib"] for r in scores)
        score.update(prepare_seconds=prepare_s, reconstruct_seconds=recon["seconds"],
                     rest_seconds=score["seconds"] - prepare_s - recon["seconds"])
        share, windows = reconstruct_split(detector, grid), score_windows(detector, len(grid.index))
        model_s = share["model"] * recon["seconds"]
        recon.update(
            windows=windows, model_seconds=model_s, aggregate_seconds=share["aggregate"] * recon["seconds"],
            other_seconds=share["other"] * recon["seconds"],
            model_windows_per_second=windows / model_s if model_s else float("nan"),
            model_gflops=windows * fwd / model_s / 1e9 if model_s else float("nan"),
        )  # fmt: skip
        out[n] = {"reconstruct": recon, "score": score, "numpy_peak_mib": numpy_peak_during_reconstruct(detector, grid),
                  "score_runs_s": [r["seconds"] for r in scores], "reconstruct_runs_s": [r["seconds"] for r in recons]}
        del grid
        print_scoring(n, out[n], ceiling)
    return out, fit_seconds


def print_scoring(n: int, figures: dict[str, Any], ceiling: float) -> None:
    """Three lines per series: score split, reconstruct split, memory."""
    recon, score = figures["reconstruct"], figures["score"]

    def runs(key: str) -> str:
        return ", ".join(f"{t:.2f}" for t in figures[key])

    print(
        f"  {label_points(n):>5}: score {score['seconds']:6.2f} s (runs {runs('score_runs_s')}) "
        f"= {score['points_per_second']:7.0f} points/s: prepare {score['prepare_seconds']:.2f} "
        f"+ reconstruct {score['reconstruct_seconds']:.2f} + rest {score['rest_seconds']:.2f} s"
    )
    print(
        f"         bare reconstruct {recon['seconds']:6.2f} s (runs {runs('reconstruct_runs_s')}) "
        f"= {recon['points_per_second']:7.0f} points/s: model {recon['model_seconds']:.2f} "
        f"+ aggregation {recon['aggregate_seconds']:.2f} + other {recon['other_seconds']:.2f} s; "
        f"{recon['windows']} windows at {recon['model_windows_per_second']:.0f} windows/s, "
        f"{recon['model_gflops']:.1f} GFLOP/s = {100 * recon['model_gflops'] / ceiling:.1f}% of matmul"
    )
    print(
        f"         RSS increase: reconstruct {recon['rss_increase_mib']:.1f} MiB, score {score['rss_increase_mib']:.1f} MiB; "
        f"numpy peak in reconstruct (tracemalloc; torch tensors not seen) {figures['numpy_peak_mib']:.1f} MiB"
    )


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def training_rows(training: dict[int, dict[str, TrainFigure]], ceiling: float) -> list[tuple[str, str, str, str]]:
    rows = []
    for n, figs in training.items():
        s, ref, dft, naive = label_points(n), figs["reference"], figs["default"], figs["naive"]
        rows += [
            ("Training, reference H=64 (fit, batch 64)", s, f"{ref.windows_per_second:.0f}", "windows/s"),
            (f"Training, default H={dft.hidden_size} (fit, batch {dft.batch_size})", s, f"{dft.windows_per_second:.0f}", "windows/s"),
            ("Training, reference H=64, naive loop (batch 32)", s, f"{naive.windows_per_second:.0f}", "windows/s"),
            ("Speed-up fit / naive (reference)", s, f"{ref.windows_per_second / naive.windows_per_second:.2f}", "×"),
            ("LSTM FLOP/s in training, reference", s, f"{ref.achieved_gflops:.1f} ({100 * ref.achieved_gflops / ceiling:.1f}%)", "GFLOP/s (% of matmul)"),
            ("LSTM FLOP/s in training, default", s, f"{dft.achieved_gflops:.1f} ({100 * dft.achieved_gflops / ceiling:.1f}%)", "GFLOP/s (% of matmul)"),
        ]
    return rows


def scoring_rows(scoring: dict[int, dict[str, Any]], ceiling: float) -> list[tuple[str, str, str, str]]:
    rows = []
    for n, sc in scoring.items():
        s, recon, score = label_points(n), sc["reconstruct"], sc["score"]
        rows += [
            ("Scoring, detector.score (default config)", s, f"{score['points_per_second']:.0f}", "points/s"),
            ("  of which prepare / reconstruct / rest", s,
             f"{score['prepare_seconds']:.2f} / {score['reconstruct_seconds']:.2f} / {score['rest_seconds']:.2f}", "s"),
            ("Bare reconstruct (detector.reconstruct)", s, f"{recon['points_per_second']:.0f}", "points/s"),
            ("  of which model / aggregation / other (cProfile shares)", s,
             f"{recon['model_seconds']:.2f} / {recon['aggregate_seconds']:.2f} / {recon['other_seconds']:.2f}", "s"),
            ("LSTM FLOP/s in scoring (model part)", s,
             f"{recon['model_gflops']:.1f} ({100 * recon['model_gflops'] / ceiling:.1f}%)", "GFLOP/s (% of matmul)"),
            ("RSS increase during reconstruct", s, f"{recon['rss_increase_mib']:.1f}", "MiB"),
            ("RSS increase during detector.score", s, f"{score['rss_increase_mib']:.1f}", "MiB"),
            ("numpy peak during reconstruct (tracemalloc)", s, f"{sc['numpy_peak_mib']:.1f}", "MiB"),
        ]
    return rows


def markdown_table(rows: list[tuple[str, str, str, str]]) -> str:
    """A README-ready Markdown table: figure, series, value, unit."""
    lines = ["| Figure | Series | Value | Unit |", "|---|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    """The same figures as JSON, for tracking them across commits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=float))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k points instead of 100k and 1M")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per figure, best reported (default 2, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    command = "python " + " ".join(["benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # the naive loop and the matmul; fits and scores set the same from their config
    sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    meter = RssMeter()
    load_start = os.getloadavg()
    print(f"command: {command}")
    print(f"load average at start (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"torch {torch.__version__}, numpy {np.__version__}, cores {os.cpu_count()}, "
          f"threads used {args.threads} (torch default {default_threads}), best of {args.repeats} run(s) per figure")

    print(f"\n== dense float32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}, {args.threads} threads")
    matmul = matmul_gflops(MATMUL_SIZE, min_seconds=1.0 if args.quick else 3.0)
    print(f"  best {matmul['best_gflops']:.1f} GFLOP/s, median {matmul['median_gflops']:.1f} GFLOP/s "
          f"over {matmul['repeats']} runs (the median is the reference below)")
    ceiling = matmul["median_gflops"]

    long_frame, gen_seconds = make_frame(sizes[-1])
    frames = {n: long_frame.iloc[:n] for n in sizes}
    print(f"\nseries: clean_metrics({sizes[-1]}, freq='1min', metrics=('requests',)) built in {gen_seconds:.2f} s; "
          f"the {label_points(sizes[0])} series is its prefix")

    print("\n== training, 1 epoch of fit (windows/s = history_.windows_seen / the epoch callback's seconds, "
          "which include the validation pass; val windows estimated from validation_fraction)")
    print("FLOP model:\n  " + FLOP_FORMULA.replace("\n", "\n  "))
    training = run_training(frames, args.threads, args.repeats, ceiling)

    default = DetectorConfig()
    print(f"\n== scoring, DetectorConfig() (score_stride {default.window.score_stride}, {args.threads} threads; "
          "prepare = normalise, reconstruct = detector.reconstruct, each timed alone; rest = score minus both)")
    scoring, fit_seconds = run_scoring(frames, args.threads, args.repeats, ceiling, meter)

    peak = meter.peak_mib()
    load_end = os.getloadavg()
    total = time.perf_counter() - started
    print(f"\npeak RSS of the process (ru_maxrss): {peak:.0f} MiB")
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; total runtime {total:.0f} s")

    rows = [(f"Dense matmul {MATMUL_SIZE}² float32, median (best)", "-",
             f"{ceiling:.0f} ({matmul['best_gflops']:.0f})", "GFLOP/s")]
    rows += training_rows(training, ceiling) + scoring_rows(scoring, ceiling)
    rows += [
        ("Peak RSS of the benchmark process", "-", f"{peak:.0f}", "MiB"),
        ("Load average at start / end (1 min)", "-", f"{load_start[0]:.2f} / {load_end[0]:.2f}", "-"),
        ("Total benchmark runtime", "-", f"{total:.0f}", "s"),
    ]
    print("\n" + markdown_table(rows))
    print(f"\nCommand: `{command}` ({args.threads} threads on {os.cpu_count()} cores, best of {args.repeats})")

    if args.out is not None:
        write_figures(args.out, {
            "command": command, "load_average_start": load_start, "load_average_end": load_end,
            "threads": args.threads, "repeats": args.repeats, "torch_default_threads": default_threads,
            "cores": os.cpu_count(), "torch": torch.__version__,
            "series": f"clean_metrics(n, freq='1min', metrics=('requests',)), built in {gen_seconds:.2f} s",
            "flop_formula": FLOP_FORMULA, "matmul": matmul,
            "training": {label_points(n): {k: f.to_dict() for k, f in figs.items()} for n, figs in training.items()},
            "scoring": {label_points(n): sc for n, sc in scoring.items()},
            "fit_seconds_scoring_detector": fit_seconds, "peak_rss_mib": peak, "total_seconds": total,
        })
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
