"""Scale figures for the scheduled score run: 1,000 metrics, one model each, one new hour.

Prints figures, never pass/fail verdicts (the aim in the issue is a score run
under 30 s on 2 cores; whether this machine meets it is read off the output).

    .venv/bin/python benchmarks/flows_scale.py                      # 1,000 metrics, ~12-15 min (training ~5-8)
    .venv/bin/python benchmarks/flows_scale.py --metrics 50         # smoke run, ~1-2 min
    .venv/bin/python benchmarks/flows_scale.py --out bench-output/flows_scale.json
    .venv/bin/python benchmarks/flows_scale.py --keep --workdir /tmp/fs1000   # keep data and models ...
    .venv/bin/python benchmarks/flows_scale.py --reuse /tmp/fs1000            # ... and time the score run again
    .venv/bin/python benchmarks/flows_scale.py --reuse /tmp/fs1000 --dask     # ... also on a local Dask cluster

What it does, in order:

1. Generates ``--metrics`` incident-free 1-minute series
   (:func:`anomaly.clean_metrics`: each name gets its own scale,
   phase, trend and noise) covering ``--history`` plus one more hour, and
   appends the history to a fresh workspace's raw store (one batch).
2. Starts the ephemeral Prefect server by running a trivial flow (timed and
   reported on its own, never inside the score-run figure).
3. Trains one model per metric (the default grouping) with the *default
   architecture and scoring settings* (window 48, hidden 32, stride 10),
   but with training cut short (``--epochs``, ``--max-train-windows``): the
   score run's cost depends on the model's shape, not on how well it was
   trained, and 1,000 full trainings would take hours. Training runs
   :func:`anomaly.train_group` in a process pool by default
   (``--train-via flow`` uses ``flows.train.train_flow``); each worker then
   scores its metric's held-out slice once, so every metric has a score
   state at the end of the history, as after an earlier hourly run.
4. Appends one new hour (60 points) per metric to the store.
5. Times ``flows.score.score_flow(workspace, registry)`` as deployed (it
   ends with the report flow) (``--repeats`` runs, each on a fresh copy of
   the workspace), with peak memory, CPU seconds of this process and of the
   Prefect server subprocess, and a timeline read back from the Prefect API
   (before the first ``score_batch`` task / the tasks / after the last, and
   the report subflow).
6. Runs the same work without Prefect on fresh copies: the flow's batches
   through :func:`anomaly.score_groups` on the flow's number of threads,
   then :func:`anomaly.write_report` (so the flow's wall time minus this one
   is Prefect's share), and ``score_group`` one group at a time and in
   processes.
7. With ``--dask``: starts a local Dask cluster (2 worker processes x 1
   thread), warms its workers, and times ``score_flow`` with
   ``task_runner(<scheduler address>)`` on fresh copies (``--repeats``), as a
   user with a cluster that is already running would run it; cluster start
   and warm-up are reported on their own. In this mode the script starts a
   real ``prefect server start`` on a loopback port first and every run,
   the thread-pool ones included, talks to it: with the ephemeral API each
   Dask worker process would start a temporary server of its own.
8. Profiles ``--profile-groups`` direct ``score_group`` calls with cProfile:
   the time inside ``score_group`` split by what it calls (model loading,
   store read, scoring, writes), the calls below the main ones, and the
   usual listings.

Everything goes through the public API (``from anomaly import ...``) and the
flows; nothing in the library is wrapped or replaced.

After every score run the script checks that every group was scored, with
exactly the 60 new points (and, for the first flow run, that each group's new
scores file holds them and its state moved to the end of the new hour).

Other processes on the machine skew every figure: the load average is printed
at the start and the end, every timed run is printed and the best is the
headline. Timings on a shared 2-core VM easily differ by 20-30% between
identical runs.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import multiprocessing
import os
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, for its memory meter
from throughput import RssMeter, release_free_memory

from anomaly import (
    DetectorConfig,
    Group,
    ModelRegistry,
    RawStore,
    Scores,
    Workspace,
    clean_metrics,
    normalise,
    plan_groups,
    score_group,
    score_groups,
    score_step,
    train_group,
    write_report,
)

REPO = Path(__file__).resolve().parent.parent
#: First timestamp of the history: noon, so the new hour lands in a day partition that already holds data.
START = pd.Timestamp("2026-01-05 12:00", tz="UTC")
STEP = pd.Timedelta("1min")
NEW_POINTS = 60
SEED = 7
#: What a kept work folder records about its data and training, for --reuse.
SETUP = "setup.json"


# --------------------------------------------------------------------------- #
# Measurement helpers
# --------------------------------------------------------------------------- #


#: One timed call: (start, end, thread id), ``time.perf_counter`` seconds or wall-clock seconds.
Call = tuple[float, float, int]


def score_group_parts() -> dict[str, list[Callable[..., Any]]]:
    """What ``score_group`` calls directly, by part; calls to anything else count as "other".

    The public callables name the parts; the profile is matched on their
    code, so a renamed helper moves its time to "other" rather than breaking
    the figures.
    """
    return {
        "model: registry aliases + load": [ModelRegistry.aliases, ModelRegistry.load],
        "store: read_wide": [Workspace.store, RawStore.read_wide],
        "scoring: normalise + score_step": [normalise, score_step],
        "writes: scores, parts, state, carries": [
            Scores.to_frame, Workspace.write_parts, Workspace.write_score_state, Workspace.remove_stale_carries,
        ],
        "state + carry reads": [Workspace.score_state, Workspace.read_carry],
    }


#: Functions whose direct callees are listed under the parts (the public ones of the score path).
DRILL_DOWN: list[Callable[..., Any]] = [ModelRegistry.load, RawStore.read_wide, score_step, Workspace.write_parts]


def code_key(fn: Callable[..., Any]) -> tuple[str, int, str]:
    """The key cProfile files a Python function under: (file, first line, name)."""
    code = getattr(fn, "__func__", fn).__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def callees(stats: dict[Any, Any], caller: tuple[str, int, str]) -> dict[tuple[str, int, str], float]:
    """Cumulative seconds of every function ``caller`` called directly, spent in those calls."""
    out = {}
    for key, (_, _, _, _, callers) in stats.items():
        edge = callers.get(caller)
        if edge is not None:
            out[key] = edge[3]
    return out


def function_label(key: tuple[str, int, str]) -> str:
    """``store.py:808(read_wide)`` style, as pstats prints it."""
    filename, line, name = key
    return f"{Path(filename).name}:{line}({name})" if filename not in ("~", "") else name


def _status_kib(pid: int | str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Child processes, recursively (``/proc/<pid>/task/*/children``; Linux only)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*") if Path(f"/proc/{current}/task").is_dir() else []:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                kids = []
            found += kids
            todo += kids
    return found


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process (``/proc/<pid>/stat`` fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu() -> float:
    """CPU seconds used so far by this process's descendants (the Prefect server subprocess)."""
    return sum(_cpu_of(p) for p in _descendants(os.getpid()))


def self_cpu() -> float:
    """CPU seconds used so far by this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of one process and its descendants (the real Prefect server, not the Dask workers beside it)."""
    return sum(_cpu_of(p) for p in [pid, *_descendants(pid)])


def wait_children_idle(
    limit: float = 60.0, interval: float = 0.5, quiet: float = 0.02, cpu: Callable[[], float] = children_cpu
) -> tuple[float, float]:
    """Wait until the server subprocess stops using CPU (it still digests a run's events and logs).

    Returns (seconds waited, CPU seconds it used meanwhile), so the next
    measurement does not share the cores with the previous run's backlog.
    ``cpu`` reads the server's CPU seconds; the default (all descendants)
    would also count idle Dask workers, whose heartbeats never go quiet.
    """
    t0, c0 = time.perf_counter(), cpu()
    last = c0
    while time.perf_counter() - t0 < limit:
        time.sleep(interval)
        now = cpu()
        if now - last < quiet * interval:
            break
        last = now
    return time.perf_counter() - t0, cpu() - c0


class ChildRssSampler:
    """Peak summed RSS of this process's descendants (the Prefect server subprocess), sampled.

    With ``root``, of that process and its descendants instead (the real
    server only, when Dask workers are descendants too).
    """

    def __init__(self, interval: float = 0.25, root: int | None = None) -> None:
        self.interval, self.peak_kib, self._stop = interval, 0, threading.Event()
        self._pids = (lambda: _descendants(os.getpid())) if root is None else (lambda: [root, *_descendants(root)])
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(_status_kib(p, "VmRSS") for p in self._pids())
            self.peak_kib = max(self.peak_kib, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "ChildRssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Best, median, worst and every run, for a list of seconds."""
    return {
        "best": min(values),
        "median": statistics.median(values),
        "worst": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / min(values) if min(values) > 0 else 0.0,
        "runs": list(values),
    }


def runs_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


# --------------------------------------------------------------------------- #
# Data and training
# --------------------------------------------------------------------------- #


def metric_names(n: int) -> list[str]:
    return [f"svc{i // 10:03d}.metric{i % 10}" for i in range(n)]


def generate(names: list[str], points: int) -> pd.DataFrame:
    """Wide 1-minute frame; every generic metric gets its own scale, phase, trend and noise from its name."""
    return clean_metrics(points, freq="1min", start=str(START), metrics=names, seed=SEED)


def to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """Long form (metric, timestamp, value) as a collector would export it."""
    n, m = wide.shape
    return pd.DataFrame(
        {
            "metric": np.repeat(np.asarray(wide.columns, dtype=object), n),
            "timestamp": np.tile(wide.index.to_numpy(), m),
            "value": wide.to_numpy().T.ravel(),
        }
    )


def _pool_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_and_catch_up(
    group: Group, workspace: str, registry: str, config: DetectorConfig | None, history: str, holdout: str
) -> dict[str, Any]:
    """Train one group (pool mode), then score its held-out slice once, as an earlier hourly run would."""
    t0 = time.perf_counter()
    trained = train_group(group, workspace, registry, config, history=history, validation=holdout) if config else None
    t1 = time.perf_counter()
    caught_up = score_group(group, workspace, registry)
    t2 = time.perf_counter()
    return {"group": group.name, "train_s": t1 - t0, "catch_up_s": t2 - t1, "trained": trained, "catch_up": caught_up}


def _score_only(group: Group, workspace: str, registry: str) -> dict[str, Any]:
    return score_group(group, workspace, registry)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh interpreters (spawn): forking a process that already ran torch can deadlock OpenMP."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_init, initargs=(1,))


def train_all(args: argparse.Namespace, groups: list[Group], workspace: Path, registry: Path, config: DetectorConfig) -> dict[str, Any]:
    """Train every group and catch its score state up to the end of the history."""
    train_span = f"{int((pd.Timedelta(args.history) - pd.Timedelta(args.holdout)) / STEP)}min"
    out: dict[str, Any] = {"mode": args.train_via, "train_history": train_span, "holdout": args.holdout}
    t0 = time.perf_counter()
    if args.train_via == "flow":
        from flows.train import train_flow

        config_path = workspace.parent / "train-config.json"
        config_path.write_text(config.to_json())
        state = train_flow(
            str(workspace), str(registry), config_path=str(config_path), history=train_span,
            validation=args.holdout, return_state=True,
        )  # fmt: skip
        if not state.is_completed():
            raise SystemExit(f"training flow ended {state.name}: {state.message}")
        out["train_wall_s"] = time.perf_counter() - t0
        config = None  # already trained: the pool only catches up
    t1 = time.perf_counter()
    with spawn_pool(args.workers) as pool:
        work = functools.partial(
            _train_and_catch_up, workspace=str(workspace), registry=str(registry), config=config,
            history=train_span, holdout=args.holdout,
        )  # fmt: skip
        done = list(pool.map(work, groups, chunksize=max(1, min(16, len(groups) // (4 * args.workers)))))
    wall = time.perf_counter() - t1
    bad = [f"{d['group']} ({d['catch_up']['status']})" for d in done if d["catch_up"]["status"] != "scored"]
    if bad:  # "no-model" here means the training left no production model
        raise SystemExit(f"catch-up scoring did not score {len(bad)} group(s), e.g. {bad[:3]}")
    catch_up = [d["catch_up_s"] for d in done]
    if args.train_via == "pool":
        per_model = [d["train_s"] for d in done]
        out["train_wall_s"] = wall  # includes the catch-up scoring, see catch_up_s
        out["per_model_train_s"] = {"median": statistics.median(per_model), "p90": float(np.percentile(per_model, 90))}
        out["epochs"] = sorted({d["trained"]["epochs"] for d in done})
        out["train_points"] = sorted({d["trained"]["train_points"] for d in done})
    out["catch_up_task_s"] = float(sum(catch_up))
    out["catch_up_points"] = sorted({d["catch_up"]["points"] for d in done})
    out["pool_wall_s"] = wall
    return out


# --------------------------------------------------------------------------- #
# Score runs
# --------------------------------------------------------------------------- #


def copy_workspace(base: Path, target: Path) -> Path:
    """A fresh copy of the trained workspace (store, scores, events, ...); the registry is shared, read-only."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(Workspace(base).root, target)
    return target


def check_results(results: list[dict[str, Any]], groups: list[Group], new_from: pd.Timestamp, new_to: pd.Timestamp) -> list[str]:
    """Problems with a run's group results: every group scored, exactly the new hour, nothing else."""
    problems = []
    by_group = {r.get("group"): r for r in results}
    for g in groups:
        r = by_group.get(g.name)
        if r is None:
            problems.append(f"{g.name}: no result")
        elif r.get("status") != "scored":
            problems.append(f"{g.name}: status {r.get('status')} {r.get('message', '')}")
        elif r["points"] != NEW_POINTS or pd.Timestamp(r["from"]) != new_from or pd.Timestamp(r["to"]) != new_to:
            problems.append(f"{g.name}: scored {r['points']} point(s) {r['from']} -> {r['to']}")
    return problems


def check_run(
    fig: dict[str, Any], results: list[dict[str, Any]], groups: list[Group], workspace: Path,
    new_from: pd.Timestamp, new_to: pd.Timestamp, *, files: bool,
) -> list[str]:
    """Every problem of one timed score_flow run; ``files`` also checks what it wrote (done for a first run)."""
    problems = check_results(results, groups, new_from, new_to) + fig["failures"]
    if files and not problems:
        problems += check_files(results, workspace, new_from, new_to)
    return problems


def check_files(results: list[dict[str, Any]], workspace: Path, new_from: pd.Timestamp, new_to: pd.Timestamp) -> list[str]:
    """The new scores file of every group holds exactly the new hour, and its state moved to its end."""
    problems = []
    space = Workspace(workspace)
    expected = pd.date_range(new_from, new_to, freq=STEP)
    for r in results:
        frame = pd.read_parquet(r["scores_file"])
        stamps = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
        if len(frame) != NEW_POINTS or not stamps.equals(expected.rename(stamps.name)):
            problems.append(f"{r['group']}: scores file has {len(frame)} row(s) {stamps.min()} -> {stamps.max()}")
        state = space.score_state(r["group"])
        if state is None or state.last_scored != new_to:
            problems.append(f"{r['group']}: state says last_scored {state.last_scored if state else None}")
    return problems


def timed_flow_run(
    workspace: Path, registry: Path, groups: list[Group], meter: RssMeter, workers: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One score_flow call, with memory, CPU, and its timeline as the Prefect API recorded it."""
    import flows.score as score_module

    wait_children_idle()
    with ChildRssSampler() as children, meter.measure() as rss:
        server0, self0 = children_cpu(), self_cpu()
        wall0, t0 = time.time(), time.perf_counter()
        state = score_module.score_flow(str(workspace), str(registry), return_state=True)
        t1 = time.perf_counter()
        server1, self1 = children_cpu(), self_cpu()
    backlog_wait, backlog_cpu = wait_children_idle()
    results = state.result(raise_on_failure=False)
    failures = [] if state.is_completed() else [f"flow ended {state.name}: {str(state.message)[:500]}"]
    recorded = recorded_runs(state.state_details.flow_run_id, len(score_module.batches(groups)))
    figure = {
        "wall_s": t1 - t0,
        "state": state.name,
        "tasks": len(recorded["tasks"]),
        "rss_before_mib": rss["before_mib"],
        "rss_peak_mib": rss["peak_mib"],
        "rss_increase_mib": rss["increase_mib"],
        "server_rss_peak_mib": children.peak_kib / 1024,
        "cpu_s_this_process": self1 - self0,
        "cpu_s_server": server1 - server0,
        "server_busy_after_run_s": backlog_wait,
        "cpu_s_server_after_run": backlog_cpu,
        "failures": failures,
        "report_flow_s": recorded["report_s"],
        **timeline(recorded["tasks"], wall0, wall0 + (t1 - t0), workers, len(groups)),
    }
    return figure, list(results) if isinstance(results, list) else []


def recorded_runs(flow_run_id: Any, expected: int, patience_s: float = 30.0) -> dict[str, Any]:
    """The flow run's ``score_batch`` task runs as (start, end, 0) wall-clock seconds, and its report subflow's seconds.

    Read from the Prefect API, which records task runs from the events the
    flow sends: they are waited for (up to ``patience_s``) until all
    ``expected`` have ended.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        of_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        deadline = time.monotonic() + patience_s
        while True:
            runs = [r for r in client.read_task_runs(flow_run_filter=of_run) if r.name.startswith("score_batch")]
            done = [r for r in runs if r.start_time is not None and r.end_time is not None]
            if len(done) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    reports = [r.total_run_time.total_seconds() for r in children if r.end_time is not None]
    calls = [(r.start_time.timestamp(), r.end_time.timestamp(), 0) for r in done]
    return {"tasks": calls, "report_s": sum(reports) if reports else None}


def timeline(calls: Sequence[Call], t0: float, t1: float, workers: int, groups: int) -> dict[str, Any]:
    """Before the first call, the phase of calls, after the last; idle worker time between calls.

    ``calls`` are the batches of groups (a flow's tasks, or the direct run's
    ``score_groups`` calls), on the same clock as ``t0`` and ``t1``.
    """
    if not calls:
        return {}
    first, last = min(c[0] for c in calls), max(c[1] for c in calls)
    inside = sum(b - a for a, b, _ in calls)
    phase = last - first
    idle = max(0.0, workers * phase - inside)
    return {
        "before_first_task_s": first - t0,
        "task_phase_s": phase,
        "after_last_task_s": t1 - last,
        "inside_tasks_s": inside,
        "idle_worker_s": idle,
        "idle_ms_per_group": 1000 * idle / groups,
        "ms_per_group_in_tasks": 1000 * inside / groups,
    }


def direct_threads(
    workspace: Path, registry: Path, groups: list[Group], meter: RssMeter, workers: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The flow's work without Prefect: its batches through score_groups on as many threads, then the report."""
    from flows.common import limit_torch_threads
    from flows.score import batches

    calls: list[Call] = []

    def one(batch: list[Group]) -> list[dict[str, Any]]:
        limit_torch_threads()  # what the flow's task does first
        t0 = time.perf_counter()
        try:
            return score_groups(batch, str(workspace), str(registry))
        finally:
            calls.append((t0, time.perf_counter(), threading.get_ident()))

    wait_children_idle()
    with meter.measure() as rss:
        c0, t0 = self_cpu(), time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = [r for batch in pool.map(one, batches(groups)) for r in batch]
        t_report = time.perf_counter()
        write_report(workspace)
        c1, t1 = self_cpu(), time.perf_counter()
    figure = {
        "wall_s": t1 - t0,
        "report_s": t1 - t_report,
        "cpu_s_this_process": c1 - c0,
        "rss_increase_mib": rss["increase_mib"],
        "torch_threads": torch.get_num_threads(),
        **timeline(calls, t0, t1, workers, len(groups)),
    }
    return figure, results


def direct_sequential(
    workspace: Path, registry: Path, groups: list[Group], meter: RssMeter
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One group after another on one thread with one torch thread: per-group costs without contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wait_children_idle()
        with meter.measure() as rss:
            c0, t0 = self_cpu(), time.perf_counter()
            results = [score_group(g, str(workspace), str(registry)) for g in groups]
            c1, t1 = self_cpu(), time.perf_counter()
    finally:
        torch.set_num_threads(previous)
    figure = {
        "wall_s": t1 - t0,
        "cpu_s_this_process": c1 - c0,
        "rss_increase_mib": rss["increase_mib"],
        "torch_threads": 1,
        "ms_per_group": 1000 * (t1 - t0) / len(groups),
    }
    return figure, results


def _ready(_: int) -> int:
    """A worker's pid, after a pause long enough that the other workers get some of the calls."""
    time.sleep(0.05)
    return os.getpid()


def direct_processes(workspace: Path, registry: Path, groups: list[Group], workers: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same calls in ``workers`` processes (1 torch thread each), started before the clock."""
    wait_children_idle()
    with spawn_pool(workers) as pool:
        pids = set(pool.map(_ready, range(4 * workers), chunksize=1))  # start and import in every worker
        while len(pids) < workers:
            pids |= set(pool.map(_ready, range(4 * workers), chunksize=1))
        t0 = time.perf_counter()
        results = list(
            pool.map(_score_only, groups, [str(workspace)] * len(groups), [str(registry)] * len(groups),
                     chunksize=max(1, min(16, len(groups) // (8 * workers))))
        )  # fmt: skip
        t1 = time.perf_counter()
    return {"wall_s": t1 - t0, "processes": workers, "ms_per_group": 1000 * (t1 - t0) / len(groups)}, results


def profile_groups(workspace: Path, registry: Path, groups: list[Group], top: int) -> dict[str, Any]:
    """cProfile of direct score_group calls (1 torch thread): its parts, their main calls, and the usual listings."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    profiler = cProfile.Profile()
    try:
        t0 = time.perf_counter()
        profiler.enable()
        for g in groups:
            score_group(g, str(workspace), str(registry))
        profiler.disable()
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out: dict[str, Any] = {"groups": len(groups), "wall_s_under_profiler": wall, **score_group_split(stats, len(groups))}
    own: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.items():
        own[package_of(filename)] += tottime
    total = sum(own.values())
    out["own_time_by_package_s"] = dict(sorted(own.items(), key=lambda kv: -kv[1]))
    out["own_time_total_s"] = total
    for key in ("cumulative", "tottime"):
        buffer = io.StringIO()
        listing = pstats.Stats(profiler, stream=buffer)
        listing.strip_dirs().sort_stats(key).print_stats(top)
        text = buffer.getvalue()
        out[key] = text[text.find("   ncalls"):].rstrip() if "   ncalls" in text else text
    return out


def score_group_split(stats: dict[Any, Any], groups: int, listed: int = 6) -> dict[str, Any]:
    """The time inside score_group by part (see :func:`score_group_parts`), and the main calls of the score path.

    Each part is the cumulative time of the calls ``score_group`` made
    directly to its functions; "other" is the rest (the workspace and
    registry objects, interval checks, splitting the frame, ...).
    """
    inside = stats[code_key(score_group)][3] if code_key(score_group) in stats else 0.0
    direct = callees(stats, code_key(score_group))
    parts: dict[str, dict[str, float]] = {}
    for label, functions in score_group_parts().items():
        seconds = sum(direct.pop(code_key(fn), 0.0) for fn in functions)
        parts[label] = {"seconds": seconds, "ms_per_group": 1000 * seconds / groups, "share": seconds / inside if inside else 0.0}
    rest = max(0.0, inside - sum(part["seconds"] for part in parts.values()))
    parts["other"] = {"seconds": rest, "ms_per_group": 1000 * rest / groups, "share": rest / inside if inside else 0.0}
    below = {}
    for fn in DRILL_DOWN:
        calls = sorted(callees(stats, code_key(fn)).items(), key=lambda kv: -kv[1])[:listed]
        below[f"{fn.__qualname__}"] = [(function_label(key), 1000 * seconds / groups) for key, seconds in calls]
    return {"inside_score_group_s": inside, "parts": parts, "main_calls_ms_per_group": below}


def package_of(filename: str) -> str:
    """``pandas``, ``pyarrow``, ``anomaly/io/store.py``, ``stdlib``, ``builtins``: where a profiled function lives."""
    if filename.startswith(("~", "<")):
        return "builtins (C functions: numpy, torch ops, I/O, ...)" if filename == "~" else filename
    path = Path(filename)
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].split(".")[0].removeprefix("_")
    if REPO in path.parents:
        return str(path.relative_to(REPO))
    return "python stdlib"


# --------------------------------------------------------------------------- #
# Prefect
# --------------------------------------------------------------------------- #


def start_prefect() -> dict[str, float]:
    """Run a trivial flow twice: the first call starts the ephemeral server, the second is a bare flow run."""
    t0 = time.perf_counter()
    from prefect import flow

    @flow(name="flows-scale-noop")
    def noop() -> int:
        return 1

    t1 = time.perf_counter()
    noop()
    t2 = time.perf_counter()
    noop()
    t3 = time.perf_counter()
    return {"import_prefect_s": t1 - t0, "first_flow_with_server_start_s": t2 - t1, "trivial_flow_run_s": t3 - t2}


def import_cost() -> float:
    """Seconds a fresh interpreter takes to import ``flows.score`` (what a worker-launched run pays first)."""
    code = "import time; t=time.perf_counter(); import flows.score; print(time.perf_counter()-t)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- #
# A real Prefect server (--dask)
# --------------------------------------------------------------------------- #

#: Settings of the real server: no UI, no analytics, no network.
SERVER_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false", "DO_NOT_TRACK": "1"}
#: A fresh database is migrated first, which takes a while on a busy 2-core machine.
SERVER_START_TIMEOUT_S = 120.0


@dataclass
class Server:
    """A running ``prefect server start``: its API URL, process, log and how long it took to answer."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    start_s: float
    attempts: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def figures(self) -> dict[str, Any]:
        return {"mode": "real server (prefect server start)", "url": self.url, "start_s": self.start_s, "attempts": self.attempts}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, deadline: float, log: Path) -> bool:
    """True once ``/health`` answers; False if the process exits first (another process took the port, say)."""
    import httpx

    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.25)
    raise SystemExit(f"the Prefect server at {url} did not answer /health in {SERVER_START_TIMEOUT_S:.0f} s\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, SIGKILL after ``grace_s``, then kill what is left of its session (it was started in its own)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with a home of its own (SQLite inside); always stopped.

    Its environment has no inherited ``PREFECT_*`` setting, so this
    process's home does not leak into it. Output goes to a log file, not a
    pipe that could fill up. A few attempts: another process may take the
    free port before the server binds it.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SERVER_ENV, PREFECT_HOME=str(home))
    prefect = Path(sys.executable).parent / "prefect"
    t0, deadline = time.perf_counter(), time.monotonic() + SERVER_START_TIMEOUT_S
    log = home / "server-1.log"
    for attempt in range(1, 4):
        port = _free_port()
        url, log = f"http://127.0.0.1:{port}/api", home / f"server-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        try:
            if _wait_healthy(proc, url, deadline, log):
                yield Server(url, proc, log, time.perf_counter() - t0, attempt)
                return
        finally:
            _stop(proc)
    raise SystemExit(f"the Prefect server exited before answering /health\n{_tail(log)}")


# --------------------------------------------------------------------------- #
# Dask (--dask)
# --------------------------------------------------------------------------- #

#: Worker processes of the local cluster, one thread each (one per core here).
DASK_WORKERS = 2


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """``os.environ`` with ``values`` set, as processes started inside inherit it; restored on exit."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker_usage(reset_peak: bool = False) -> dict[str, float]:
    """In a Dask worker: pid, CPU seconds, RSS and RSS high-water mark (reset afterwards when asked)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures = {"pid": os.getpid(), "cpu_s": usage.ru_utime + usage.ru_stime,
               "rss_kib": _status_kib("self", "VmRSS"), "peak_kib": _status_kib("self", "VmHWM")}
    if reset_peak:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    return figures


def _import_flows() -> float:
    """In a Dask worker: import the flow module, as the first task would otherwise; seconds taken."""
    t0 = time.perf_counter()
    __import__("flows.score")
    return time.perf_counter() - t0


def trivial_dask_flow(address: str, tasks: int) -> list[int]:
    """A flow of trivial tasks on the cluster: each worker's first Prefect task run and API client, paid once.

    Returns the pids the tasks ran in.
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from flows.common import task_runner

    @task(cache_policy=NO_CACHE)
    def where(_: int) -> int:
        time.sleep(0.05)
        return os.getpid()

    @flow(name="flows-scale-dask-warm-up", task_runner=task_runner(address))
    def warm_up() -> list[int]:
        return [future.result() for future in where.map(range(tasks))]

    return warm_up()


@contextlib.contextmanager
def dask_cluster(workers: int) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """A local cluster, started and warmed up before any clock runs: a user's cluster is already up.

    The worker processes inherit ``PREFECT_API_URL`` (the real server) and
    one torch thread each from the environment. Yields the cluster, a client
    for reading the workers' CPU and memory, and the start-up figures.
    """
    from distributed import Client, LocalCluster

    with environment(ANOMALY_TORCH_THREADS="1"):
        t0 = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:  # fmt: skip
            client.wait_for_workers(workers)
            t1 = time.perf_counter()
            imports = client.run(_import_flows)
            t2 = time.perf_counter()
            pids = trivial_dask_flow(cluster.scheduler_address, 4 * workers)
            t3 = time.perf_counter()
            usage = client.run(_worker_usage, reset_peak=True)
            yield cluster, client, {
                "workers": workers,
                "threads_per_worker": 1,
                "scheduler_address": cluster.scheduler_address,
                "cluster_start_s": t1 - t0,
                "import_flows_score_s": t2 - t1,
                "import_flows_score_per_worker_s": sorted(imports.values()),
                "trivial_flow_on_cluster_s": t3 - t2,
                "trivial_flow_worker_pids": sorted(set(pids)),
                "startup_and_warm_up_s": t3 - t0,
                "worker_rss_after_warm_up_mib": sorted(u["rss_kib"] / 1024 for u in usage.values()),
            }


def timed_dask_run(
    workspace: Path, registry: Path, groups: list[Group], address: str, client: Any, meter: RssMeter, server: Server
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One ``score_flow`` call with ``task_runner(address)``: wall, CPU of this process, the server and the workers.

    The clock covers what a user's call covers: building the runner, the
    flow run, its client connecting to the scheduler, the tasks on the
    workers and the results coming back. Server figures are read from the
    server's process tree only (the Dask workers are descendants too). No
    wrappers here: Dask pickles the flow's and the task's globals by value
    with every task, and would pickle any wrapper (and fail on its lock).
    """
    import flows.score as score_module
    from flows.common import task_runner

    server_cpu = functools.partial(tree_cpu, server.pid)
    wait_children_idle(cpu=server_cpu)
    before = client.run(_worker_usage)
    with ChildRssSampler(root=server.pid) as sampled, meter.measure() as rss:
        server0, self0 = server_cpu(), self_cpu()
        t0 = time.perf_counter()
        flow = score_module.score_flow.with_options(task_runner=task_runner(address))
        state = flow(str(workspace), str(registry), return_state=True)
        t1 = time.perf_counter()
        server1, self1 = server_cpu(), self_cpu()
    after = client.run(_worker_usage)
    backlog_wait, backlog_cpu = wait_children_idle(cpu=server_cpu)
    results = state.result(raise_on_failure=False)
    failures = [] if state.is_completed() else [f"flow ended {state.name}: {str(state.message)[:500]}"]
    restarted = sorted(set(before) ^ set(after))
    if restarted:
        failures.append(f"Dask workers changed during the run (restarted?): {restarted}")
    figure = {
        "wall_s": t1 - t0,
        "state": state.name,
        "tasks": len(score_module.batches(groups)),  # what the flow maps (not counted by a wrapper, see above)
        "cpu_s_this_process": self1 - self0,
        "cpu_s_server": server1 - server0,
        "cpu_s_workers": sum(after[w]["cpu_s"] - before[w]["cpu_s"] for w in after if w in before),
        "server_busy_after_run_s": backlog_wait,
        "cpu_s_server_after_run": backlog_cpu,
        "server_rss_peak_mib": sampled.peak_kib / 1024,
        "rss_increase_mib": rss["increase_mib"],
        "worker_rss_mib": sorted(u["rss_kib"] / 1024 for u in after.values()),
        "worker_rss_peak_since_warm_up_mib": sorted(u["peak_kib"] / 1024 for u in after.values()),
        "failures": failures,
    }
    return figure, list(results) if isinstance(results, list) else []


def dask_runs(
    args: argparse.Namespace, base: Path, registry: Path, work: Path, groups: list[Group],
    new_from: pd.Timestamp, new_to: pd.Timestamp, meter: RssMeter, server: Server,
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """``--repeats`` score runs on a warmed-up local cluster, each on a fresh copy, checked like the thread-pool runs."""
    load = os.getloadavg()
    print(f"== starting a local Dask cluster ({DASK_WORKERS} worker processes x 1 thread, 1 torch thread each) "
          f"and warming its workers (load average {load[0]:.2f}) ...", flush=True)
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    with dask_cluster(DASK_WORKERS) as (cluster, client, startup):
        print(f"  cluster up in {startup['cluster_start_s']:.1f} s; `import flows.score` in the workers "
              f"{startup['import_flows_score_s']:.1f} s; trivial flow on the cluster {startup['trivial_flow_on_cluster_s']:.1f} s "
              f"(tasks ran in {len(startup['trivial_flow_worker_pids'])} worker process(es)); none of it is in the score-run figures",
              flush=True)
        for i in range(args.repeats):
            copy = copy_workspace(base, work / f"run-dask-{i}")
            fig, results = timed_dask_run(copy, registry, groups, cluster.scheduler_address, client, meter, server)
            fig["problems"] = check_run(fig, results, groups, copy, new_from, new_to, files=i == 0)
            problems += [f"Dask run {i + 1}: {p}" for p in fig["problems"]]
            runs.append(fig)
            print(f"== score_flow on the Dask cluster, run {i + 1}: {fig['wall_s']:.1f} s wall, state {fig['state']}, "
                  f"{fig['tasks']} tasks, problems {len(fig['problems'])}", flush=True)
            shutil.rmtree(copy)
        closing = time.perf_counter()
    startup["cluster_close_s"] = time.perf_counter() - closing
    walls = [f["wall_s"] for f in runs]
    return {
        "load_average_before": load,
        "startup": startup,
        "wall_s": spread(walls),
        "worker_rss_peak_mib": max(max(f["worker_rss_peak_since_warm_up_mib"]) for f in runs),
        "runs": runs,
    }, problems


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def print_split(profile: dict[str, Any]) -> None:
    """The time inside score_group by part, and the main calls below the score path's public functions."""
    inside, n = profile["inside_score_group_s"], profile["groups"]
    print(f"  inside score_group under cProfile, one group at a time: {inside:.2f} s over {n} calls "
          f"({1000 * inside / n:.1f} ms per group; the profiler inflates Python-heavy parts more than the LSTM)")
    print(f"    {'part':<44} {'s':>7} {'ms/group':>9} {'share':>6}")
    for label, part in profile["parts"].items():
        print(f"    {label:<44} {part['seconds']:7.2f} {part['ms_per_group']:9.2f} {100 * part['share']:5.1f}%")
    for caller, calls in profile["main_calls_ms_per_group"].items():
        listed = ", ".join(f"{name} {ms:.2f}" for name, ms in calls)
        print(f"    main calls of {caller} (ms per group): {listed}")


def print_dask(dask: dict[str, Any], best_threads_flow: float, n: int) -> None:
    """The Dask runs next to the thread-pool flow's best, and what the cluster cost before the clock."""
    start, walls = dask["startup"], dask["wall_s"]
    best = min(dask["runs"], key=lambda f: f["wall_s"])
    print(f"\n== score run on a local Dask cluster ({start['workers']} worker processes x 1 thread, 1 torch thread each; "
          f"load average before it {dask['load_average_before'][0]:.2f})")
    print(f"  score_flow wall: best {walls['best']:.1f} s (runs {runs_text(walls['runs'])}); thread-pool score_flow best "
          f"{best_threads_flow:.1f} s => Dask / threads {walls['best'] / best_threads_flow:.2f} "
          f"({1000 * walls['best'] / n:.1f} vs {1000 * best_threads_flow / n:.1f} ms per group); {best['tasks']} tasks")
    print(f"  not inside the figures: cluster start {start['cluster_start_s']:.1f} s, `import flows.score` in the workers "
          f"{start['import_flows_score_s']:.1f} s, trivial flow on the cluster {start['trivial_flow_on_cluster_s']:.1f} s "
          f"(start-up + warm-up {start['startup_and_warm_up_s']:.1f} s); cluster close {start['cluster_close_s']:.1f} s")
    print(f"  CPU seconds during the best Dask run: workers {best['cpu_s_workers']:.1f} (summed), this process "
          f"{best['cpu_s_this_process']:.1f}, Prefect server {best['cpu_s_server']:.1f} (+{best['cpu_s_server_after_run']:.1f} "
          f"in the {best['server_busy_after_run_s']:.1f} s after it); {os.cpu_count() * best['wall_s']:.0f} core-seconds in the run")
    print(f"  memory: worker RSS peak {dask['worker_rss_peak_mib']:.0f} MiB (largest worker, since warm-up; after warm-up "
          f"{', '.join(f'{v:.0f}' for v in start['worker_rss_after_warm_up_mib'])} MiB); Prefect server peak "
          f"{best['server_rss_peak_mib']:.0f} MiB; this process +{best['rss_increase_mib']:.0f} MiB")


def dask_rows(dask: dict[str, Any]) -> list[tuple[str, str, str]]:
    start, walls = dask["startup"], dask["wall_s"]
    best = min(dask["runs"], key=lambda f: f["wall_s"])
    return [
        (f"Score run wall time, score_flow on a local Dask cluster ({start['workers']} processes x 1 thread), best (all runs)",
         f"{walls['best']:.1f} ({runs_text(walls['runs'])})", "s"),
        ("Dask: cluster start / import flows.score in workers / trivial flow (not in the run)",
         f"{start['cluster_start_s']:.1f} / {start['import_flows_score_s']:.1f} / {start['trivial_flow_on_cluster_s']:.1f}", "s"),
        ("Dask best run, CPU: workers / this process / Prefect server",
         f"{best['cpu_s_workers']:.1f} / {best['cpu_s_this_process']:.1f} / {best['cpu_s_server']:.1f}", "s"),
        ("Dask worker RSS, peak (largest worker)", f"{dask['worker_rss_peak_mib']:.0f}", "MiB"),
    ]


def seconds(value: float | None, unit: str = " s") -> str:
    """A figure with one decimal, or "n/a" where it could not be measured."""
    return "n/a" if value is None else f"{value:.1f}{unit}"


def markdown_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| Figure | Value | Unit |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=1000, help="metrics, one model each (default 1000)")
    parser.add_argument("--history", default="1D", help="1-minute history before the new hour (default 1D)")
    parser.add_argument("--holdout", default="2h", help="newest part of the history held out by train_group (default 2h)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (shortened; default 1)")
    parser.add_argument("--max-train-windows", type=int, default=256, help="training windows per model (shortened; default 256)")
    parser.add_argument("--train-via", choices=("pool", "flow"), default="pool",
                        help="train_group in a process pool (default) or flows.train.train_flow")
    parser.add_argument("--repeats", type=int, default=3, help="timed score_flow runs (and threaded direct runs), each on a fresh copy")
    parser.add_argument("--profile-groups", type=int, default=100, help="direct score_group calls profiled with cProfile (0: skip)")
    parser.add_argument("--profile-top", type=int, default=25, help="lines of each profile listing")
    parser.add_argument("--no-processes", action="store_true", help="skip the direct run in worker processes")
    parser.add_argument("--dask", action="store_true",
                        help=f"also time score_flow on a local Dask cluster ({DASK_WORKERS} worker processes x 1 thread), "
                             "started and warmed up before the clock; starts a real Prefect server for every run")
    parser.add_argument("--workdir", type=Path, default=None, help="where the workspace and registry go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (it can be --reuse'd)")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a work folder kept by an earlier run: skip data and training, time the score runs again "
                             "(e.g. after a code change); the folder is left as it was")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.reuse is not None and args.workdir is not None:
        parser.error("--reuse and --workdir are exclusive")
    if args.reuse is not None and not (args.reuse / SETUP).is_file():
        parser.error(f"--reuse {args.reuse}: no {SETUP} there (keep a work folder with --keep)")
    if args.metrics < 1 or args.repeats < 1 or args.epochs < 1 or args.max_train_windows < 1:
        parser.error("--metrics, --repeats, --epochs and --max-train-windows must be >= 1")
    if pd.Timedelta(args.history) - pd.Timedelta(args.holdout) < 2 * DetectorConfig().window.size * STEP:
        minutes = 2 * DetectorConfig().window.size * STEP // pd.Timedelta("1min")
        parser.error(f"--history must exceed --holdout by at least two windows ({minutes} minutes)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    command = "python " + " ".join(["benchmarks/flows_scale.py", *(sys.argv[1:] if argv is None else argv)])
    work = args.reuse or args.workdir or Path(tempfile.mkdtemp(prefix="flows-scale-"))
    if args.workdir is not None:
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"--workdir {work} is not empty")
        work.mkdir(parents=True, exist_ok=True)
    keep = args.keep or args.reuse is not None
    # A throw-away Prefect home: the ephemeral server starts on an empty database, nothing leaks out.
    prefect_home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=work))
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Its default of 20 s is not enough on a busy 2-core machine (a fresh database is migrated first).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.pop("ANOMALY_DASK_ADDRESS", None)
    try:
        with contextlib.ExitStack() as stack:
            server = None
            if args.dask:
                # Dask workers are other processes: with the ephemeral API each would start a server of its own.
                # Set before anything imports prefect, which reads its settings once.
                server = stack.enter_context(prefect_server(prefect_home / "server"))
                os.environ["PREFECT_API_URL"] = server.url
            figures = run(args, work, command, server)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(prefect_home, ignore_errors=True)
            print(f"work folder kept: {work} (time the score run again with --reuse {work})")
    figures["total_seconds"] = time.perf_counter() - started
    print(f"total benchmark runtime {figures['total_seconds']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2, default=str))
        print(f"figures written to {args.out}")
    return 0


def print_prefect(figs: dict[str, float]) -> None:
    api = os.environ.get("PREFECT_API_URL")
    first = f"against the real server at {api}" if api else "starts the ephemeral server"
    print(f"== Prefect: import {figs['import_prefect_s']:.1f} s; first trivial flow ({first}) "
          f"{figs['first_flow_with_server_start_s']:.1f} s; second trivial flow {figs['trivial_flow_run_s']:.2f} s "
          "(neither is inside the score-run figures)")


def prepare(
    args: argparse.Namespace, base: Path, registry: Path, workers: int, default: DetectorConfig, command: str
) -> dict[str, Any]:
    """Data, Prefect start-up, training and the new hour: everything before the timed runs."""
    names = metric_names(args.metrics)
    history_points = int(pd.Timedelta(args.history) / STEP)
    new_from = START + history_points * STEP
    new_to = new_from + (NEW_POINTS - 1) * STEP
    config = default.replace(training={"epochs": args.epochs}, window={"max_train_windows": args.max_train_windows})
    assert (config.model, config.scoring, config.window.size, config.window.score_stride, config.threshold, config.events) == (
        default.model, default.scoring, default.window.size, default.window.score_stride, default.threshold, default.events
    ), "only training settings may differ from the default"
    print(f"{args.metrics} metrics x {history_points} history points + {NEW_POINTS} new points at 1 min; "
          f"model: window {default.window.size}, hidden {default.model.hidden_size}, latent {default.model.latent_size}, "
          f"score stride {default.window.score_stride} (defaults)")
    print(f"TRAINING IS SHORTENED (epochs={args.epochs}, max_train_windows={args.max_train_windows}): only the score run "
          "is timed, and its cost depends on the model's shape, not on how well it was trained")

    # 1. data
    t0 = time.perf_counter()
    wide = generate(names, history_points + NEW_POINTS)
    t1 = time.perf_counter()
    store = Workspace(base).store()
    store.append(to_long(wide.iloc[:history_points]))
    t2 = time.perf_counter()
    data = {"generate_s": t1 - t0, "ingest_history_s": t2 - t1, "history_points": history_points,
            "new_from": new_from.isoformat(), "new_to": new_to.isoformat()}
    print(f"\n== data: generated in {data['generate_s']:.1f} s, history ingested (one batch, RawStore.append) in {data['ingest_history_s']:.1f} s")

    # 2. Prefect server
    prefect_figs = start_prefect()
    print_prefect(prefect_figs)

    # 3. training
    groups = plan_groups(store.metrics())
    assert len(groups) == args.metrics and all(len(g.metrics) == 1 for g in groups)
    print(f"== training {len(groups)} models ({args.train_via}; {workers} processes x 1 torch thread"
          f"{' for the catch-up' if args.train_via == 'flow' else ''}) ...", flush=True)
    training = train_all(args, groups, base, registry, config)  # fails unless every group has a production model
    print(f"  trained in {training['train_wall_s']:.0f} s wall"
          + (f" (median {training['per_model_train_s']['median']:.2f} s per model in a worker, "
             f"epochs {training['epochs']}, train points {training['train_points']})" if "per_model_train_s" in training else "")
          + f"; catch-up scoring of the {args.holdout} held-out slice: points {training['catch_up_points']}, "
          f"{training['catch_up_task_s']:.0f} s summed over workers")

    # 4. the new hour
    t0 = time.perf_counter()
    appended = store.append(to_long(wide.iloc[history_points:]))
    data["ingest_new_hour_s"] = time.perf_counter() - t0
    assert appended.rows_written == NEW_POINTS * args.metrics, appended
    data["store_part_files"] = sum(1 for _ in Workspace(base).store_root.rglob("*.parquet"))
    print(f"== new hour {new_from:%Y-%m-%d %H:%M} .. {new_to:%H:%M} appended in {data['ingest_new_hour_s']:.1f} s "
          f"({data['store_part_files']} part files in the store)")
    del wide
    release_free_memory()
    return {
        "command": command, "metrics": args.metrics, "config": config.to_dict(), "data": data,
        "training": training, "prefect_startup": prefect_figs,
        "training_note": (f"training shortened to epochs={args.epochs}, max_train_windows={args.max_train_windows}; "
                          "model shape and scoring settings are the defaults; only the score run is timed"),
    }


def run(args: argparse.Namespace, work: Path, command: str, server: Server | None = None) -> dict[str, Any]:
    import prefect

    from flows.common import MAX_WORKERS

    workers = MAX_WORKERS
    args.workers = workers
    meter = RssMeter()
    load_start = os.getloadavg()
    base, registry = work / "workspace", work / "models"
    default = DetectorConfig()
    print(f"command: {command}")
    print(f"load average at start (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    print(f"cores {os.cpu_count()}, torch {torch.__version__}, prefect {prefect.__version__}, "
          f"flow workers (ANOMALY_MAX_WORKERS) {workers}, work folder {work}")
    if server is not None:
        print(f"Prefect API: real server at {server.url}, answered /health {server.start_s:.1f} s after start "
              "(every flow run below talks to it, the thread-pool ones included)")
    if args.reuse is None:
        setup = prepare(args, base, registry, workers, default, command)
        prefect_figs = setup.pop("prefect_startup")
        (work / SETUP).write_text(json.dumps(setup, indent=2, default=str))
    else:
        setup = json.loads((work / SETUP).read_text())
        args.metrics = setup["metrics"]
        print(f"REUSING the data and the {args.metrics} trained models of {work} (set up by: {setup['command']})")
        prefect_figs = start_prefect()
        print_prefect(prefect_figs)
    training, data = setup["training"], setup["data"]
    new_from, new_to = pd.Timestamp(data["new_from"]), pd.Timestamp(data["new_to"])
    groups = plan_groups(Workspace(base).store().metrics())
    if len(groups) != args.metrics:
        raise SystemExit(f"expected {args.metrics} groups in {base}, found {len(groups)}")

    # 5-6. score runs, flow and direct interleaved so a burst of load hits both alike
    flow_runs: list[dict[str, Any]] = []
    thread_runs: list[dict[str, Any]] = []
    problems: list[str] = []
    for i in range(args.repeats):
        copy = copy_workspace(base, work / f"run-flow-{i}")
        fig, results = timed_flow_run(copy, registry, groups, meter, workers)
        fig["problems"] = check_run(fig, results, groups, copy, new_from, new_to, files=i == 0)
        problems += [f"flow run {i + 1}: {p}" for p in fig["problems"]]
        flow_runs.append(fig)
        print(f"== score_flow run {i + 1}: {fig['wall_s']:.1f} s wall, state {fig['state']}, "
              f"problems {len(fig['problems'])}", flush=True)
        shutil.rmtree(copy)

        copy = copy_workspace(base, work / f"run-threads-{i}")
        fig, results = direct_threads(copy, registry, groups, meter, workers)
        fig["problems"] = check_results(results, groups, new_from, new_to)
        problems += [f"threaded direct run {i + 1}: {p}" for p in fig["problems"]]
        thread_runs.append(fig)
        print(f"== direct score_groups + write_report, {workers} threads, run {i + 1}: {fig['wall_s']:.1f} s wall", flush=True)
        shutil.rmtree(copy)

    copy = copy_workspace(base, work / "run-sequential")
    sequential, results = direct_sequential(copy, registry, groups, meter)
    problems += [f"sequential run: {p}" for p in check_results(results, groups, new_from, new_to)]
    print(f"== direct score_group, one at a time: {sequential['wall_s']:.1f} s wall", flush=True)
    shutil.rmtree(copy)

    processes = None
    if not args.no_processes:
        copy = copy_workspace(base, work / "run-processes")
        processes, results = direct_processes(copy, registry, groups, workers)
        problems += [f"process run: {p}" for p in check_results(results, groups, new_from, new_to)]
        print(f"== direct score_group, {workers} processes: {processes['wall_s']:.1f} s wall", flush=True)
        shutil.rmtree(copy)

    # after the thread-pool runs: the cluster's processes would count as the server's CPU and memory there
    dask = None
    if args.dask:
        assert server is not None, "--dask needs the real server"
        dask, dask_problems = dask_runs(args, base, registry, work, groups, new_from, new_to, meter, server)
        problems += dask_problems

    profile = None
    if args.profile_groups:
        copy = copy_workspace(base, work / "run-profile")
        profile = profile_groups(copy, registry, groups[: args.profile_groups], args.profile_top)
        shutil.rmtree(copy)

    import_s = import_cost()
    load_end = os.getloadavg()
    peak = meter.peak_mib()

    # -- report ------------------------------------------------------------------
    best = min(flow_runs, key=lambda f: f["wall_s"])
    best_threads = min(thread_runs, key=lambda f: f["wall_s"])
    flow_walls, thread_walls = [f["wall_s"] for f in flow_runs], [f["wall_s"] for f in thread_runs]
    overhead = best["wall_s"] - best_threads["wall_s"]
    n = args.metrics

    print(f"\n== score run over one new hour, {n} metrics ({workers} worker threads, 1 torch thread each)")
    print(f"  score_flow wall (ending with its report flow): best {min(flow_walls):.1f} s "
          f"(runs {runs_text(flow_walls)}; spread {spread(flow_walls)['spread_pct']:.0f}%)")
    print(f"  same work without Prefect (the flow's batches through score_groups on {workers} threads, then write_report): "
          f"best {min(thread_walls):.1f} s (runs {runs_text(thread_walls)}), of which the report {best_threads['report_s']:.2f} s")
    noise = " (negative: what is left of it is smaller than the run-to-run noise)" if overhead < 0 else ""
    print(f"  => Prefect overhead (best flow - best threaded): {overhead:+.1f} s = {1000 * overhead / n:+.1f} ms per group{noise}; "
          f"the flow ran {best['tasks']} score_batch task(s) and its report subflow took {seconds(best['report_flow_s'])}")
    if "task_phase_s" in best:
        print(f"  timeline of the best flow run (Prefect API): before the first task {best['before_first_task_s']:.2f} s, "
              f"tasks {best['task_phase_s']:.1f} s, after the last task (events, artifacts, report) {best['after_last_task_s']:.2f} s; "
              f"idle worker time between tasks {best['idle_worker_s']:.1f} s ({best['idle_ms_per_group']:.1f} ms per group)")
    else:
        print("  timeline of the best flow run: the Prefect API recorded none of its tasks")
    print(f"  time per group inside tasks: flow {seconds(best.get('ms_per_group_in_tasks'), ' ms')}, "
          f"threaded {best_threads['ms_per_group_in_tasks']:.1f} ms; one at a time {sequential['ms_per_group']:.1f} ms "
          f"(wall {sequential['wall_s']:.1f} s)" + (f"; {workers} processes: wall {processes['wall_s']:.1f} s" if processes else ""))
    print(f"  CPU seconds during the best flow run: this process {best['cpu_s_this_process']:.1f}, Prefect server "
          f"{best['cpu_s_server']:.1f} (+{best['cpu_s_server_after_run']:.1f} in the {best['server_busy_after_run_s']:.1f} s "
          f"it stayed busy after the run); threaded run without Prefect: {best_threads['cpu_s_this_process']:.1f} "
          f"(of {workers * best['wall_s']:.0f} core-seconds available in the flow run)")
    print(f"  memory: RSS of this process +{best['rss_increase_mib']:.0f} MiB during the run (peak {best['rss_peak_mib']:.0f} MiB); "
          f"Prefect server subprocess peak {best['server_rss_peak_mib']:.0f} MiB; peak RSS of the benchmark {peak:.0f} MiB")
    server_start = (f"real Prefect server start {server.start_s:.1f} s" if server is not None
                    else f"ephemeral server start {prefect_figs['first_flow_with_server_start_s']:.1f} s")
    print(f"  not inside the figures: {server_start}; "
          f"a fresh interpreter's `import flows.score` {import_s:.1f} s (paid by each worker-launched scheduled run)")
    if dask is not None:
        print_dask(dask, min(flow_walls), n)
    verdict = "all groups scored, exactly the 60 new points each" if not problems else f"{len(problems)} PROBLEM(S): " + "; ".join(problems[:10])
    print(f"\n  check: {verdict}")

    if profile:
        print(f"\n== cProfile of {profile['groups']} direct score_group calls, one at a time, 1 torch thread "
              f"({profile['wall_s_under_profiler']:.1f} s under the profiler)")
        print_split(profile)
        print(f"\n   top {args.profile_top} by cumulative time")
        print(profile["cumulative"])
        print(f"\n   top {args.profile_top} by own time")
        print(profile["tottime"])
        print(f"\n   own time by package ({profile['own_time_total_s']:.2f} s in all, {profile['groups']} groups)")
        for package, secs in list(profile["own_time_by_package_s"].items())[:15]:
            print(f"     {package:<50} {secs:6.2f} s {100 * secs / profile['own_time_total_s']:5.1f}%")

    shares = "-"
    if profile:
        part = {label: 100 * p["share"] for label, p in profile["parts"].items()}
        shares = " / ".join(f"{part[k]:.0f}" for k in list(score_group_parts())[:4])
    rows = [
        ("Metrics (one model each)", f"{n}", "-"),
        ("Score run wall time, score_flow, best (all runs)", f"{min(flow_walls):.1f} ({runs_text(flow_walls)})", "s"),
        (f"Same work without Prefect (score_groups on {workers} threads + write_report), best",
         f"{min(thread_walls):.1f} ({runs_text(thread_walls)})", "s"),
        ("Prefect overhead (flow - threaded, best runs)", f"{overhead:+.1f} ({1000 * overhead / n:+.1f} per group)", "s (ms)"),
        ("Tasks in the flow run; its report subflow", f"{best['tasks']}; {seconds(best['report_flow_s'])}", "-"),
        ("Flow: before first task / tasks / after last task (Prefect API)",
         " / ".join(seconds(best.get(k), "") for k in ("before_first_task_s", "task_phase_s", "after_last_task_s")), "s"),
        ("Inside score_group: model loading / store read / scoring / writes (cProfile)", shares, "% of its time"),
        ("score_group, one at a time (1 torch thread)", f"{sequential['ms_per_group']:.1f} ms/group, {sequential['wall_s']:.1f} s", "-"),
    ]
    if processes:
        rows.append((f"Same calls in {workers} processes", f"{processes['wall_s']:.1f}", "s"))
    if dask is not None:
        rows += dask_rows(dask)
    rows += [
        ("RSS increase during the score run (this process)", f"{best['rss_increase_mib']:.0f}", "MiB"),
        ("Prefect server subprocess RSS, peak", f"{best['server_rss_peak_mib']:.0f}", "MiB"),
    ]
    if server is not None:
        rows += [
            ("Real Prefect server start, to /health (--dask; not in the run)", f"{server.start_s:.1f}", "s"),
            ("First trivial flow against it (not in the run)", f"{prefect_figs['first_flow_with_server_start_s']:.1f}", "s"),
        ]
    else:
        rows.append(("Ephemeral Prefect server start (not in the run)", f"{prefect_figs['first_flow_with_server_start_s']:.1f}", "s"))
    rows += [
        ("Fresh interpreter `import flows.score` (not in the run)", f"{import_s:.1f}", "s"),
        (f"Training (shortened; {training['mode']}), wall", f"{training['train_wall_s']:.0f}", "s"),
        ("Load average at start / end (1 min)", f"{load_start[0]:.2f} / {load_end[0]:.2f}", "-"),
    ]
    print("\n" + markdown_table(rows))
    print(f"\nCommand: `{command}`")

    return {
        "command": command,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "prefect": prefect.__version__,
        "flow_workers": workers,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "metrics": n,
        "reused_work_folder": str(args.reuse) if args.reuse else None,
        "setup_command": setup["command"],
        "training_note": setup["training_note"],
        "config": setup["config"],
        "data": data,
        "training": training,
        "prefect_startup": {**prefect_figs, "fresh_import_flows_score_s": import_s},
        "prefect_server": server.figures() if server is not None else {"mode": "ephemeral"},
        "score_flow": {"wall_s": spread(flow_walls), "runs": flow_runs},
        "direct_threads": {"wall_s": spread(thread_walls), "runs": thread_runs},
        "direct_sequential": sequential,
        "direct_processes": processes,
        "dask": dask,
        "prefect_overhead_s": overhead,
        "prefect_overhead_ms_per_group": 1000 * overhead / n,
        "peak_rss_mib": peak,
        "checks": {"problems": problems, "ok": not problems},
        "profile": profile,
    }


if __name__ == "__main__":
    sys.exit(main())
