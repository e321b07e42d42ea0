"""The ``anomaly`` command: a thin front end over the library.

Every subcommand parses arguments, calls library functions and prints where
its results went. User errors (bad data, bad config, a missing model) exit
with status 2 and one line on stderr; ``--debug`` shows the traceback.

Only argparse, the configuration (and with it yaml) and :mod:`anomaly.errors`
load at start-up: each command imports what else it needs, so ``anomaly --help``
does not wait for torch or pandas.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import __version__
from anomaly.core.config import POLICY_SECTIONS, Policy, load_config, setting_overrides
from anomaly.errors import AnomalyError, ConfigError, DataError, excerpt

if TYPE_CHECKING:
    from anomaly.core.training import EpochResult

log = logging.getLogger("anomaly")

EXIT_USER_ERROR = 2
#: Commands whose ``--out`` is a folder to write into (``generate --out`` is a file).
FOLDER_OUTS = frozenset({"train", "detect", "demo", "benchmark"})
#: ``anomaly.evaluation.benchmark.PROTOCOLS``, spelled out so that building the parser imports no torch
#: (tests/test_cli_startup.py keeps the two equal).
BENCHMARK_PROTOCOLS: tuple[str, ...] = ("batch", "stream", "stream-daily")
DESCRIPTION = """\
Find anomalies in metric streams with an LSTM autoencoder.

Data files are CSV or Parquet, either wide (a 'timestamp' column and one
column per metric) or long ('timestamp', 'metric', 'value' columns).

Models are kept in a registry folder: --registry, else $ANOMALY_REGISTRY,
else ./models.

Typical use:
  anomaly train history.csv --name checkout-api --promote production
                                                   fit on normal history, publish a version
  anomaly detect today.csv --name checkout-api --context history.csv --out results/
                                                   score new data with the production version
  anomaly models show checkout-api                versions, data ranges, thresholds, aliases
  anomaly models rollback checkout-api            production back to the previous version
  anomaly models policy set checkout-api --set threshold.k=5 --note "fewer pages"
                                                   change when it alerts, without retraining
  anomaly detect data.csv --out results/          fit and detect in one go, no registry
  anomaly alerts mark ID --false-positive --note "deploy" --silence 6h
                                                   feedback on an alert: kept out of training, silenced
  anomaly demo                                    all of it on sample data
  anomaly benchmark nab/ --protocol stream --out bench/
                                                   quality on a labelled corpus (NAB layout)
"""
POLICY_DESCRIPTION = """\
A model's policy is how its scores become alerts: the scoring, threshold and
events sections. It changes without retraining: each 'set' records a new
policy (the current one with the --set changes), used by every version of the
model from the next score run on; 'rollback' goes back one record. With no
record, each version scores as it was trained.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"anomaly {__version__}")
    _add_global_options(parser, default=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, default=argparse.SUPPRESS)  # given after the subcommand: set; absent: the top's value
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _command(sub, common, "train", cmd_train, "fit a detector on a data file and save it")
    train.add_argument("data", type=Path, help="CSV or Parquet file of normal history")
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="publish as the next version of this model in the registry")
    where.add_argument("--out", type=Path, help="write the fitted model to this plain folder instead")
    train.add_argument("--promote", metavar="ALIAS", help="also point ALIAS (e.g. production) at the new version")
    _add_registry_option(train)
    _add_config_options(train)

    detect = _command(sub, common, "detect", cmd_detect, "score a data file and write scores and events")
    detect.add_argument("data", type=Path, help="CSV or Parquet file to score")
    detect.add_argument("--out", type=Path, required=True, help="folder for scores.csv, events.csv, events.json")
    source = detect.add_mutually_exclusive_group()
    source.add_argument("--name", help="score with this registry model (production, else latest, unless --version/--alias)")
    source.add_argument("--model", type=Path, help="score with this plain model folder")
    pick = detect.add_mutually_exclusive_group()
    pick.add_argument("--version", type=_version_arg, help="with --name: this version, e.g. 000003 or 3")
    pick.add_argument("--alias", help="with --name: the version this alias points to")
    detect.add_argument("--context", type=Path, help="earlier history so the first points get full windows")
    detect.add_argument("--allow-resample", action="store_true",
                        help="score data sampled more coarsely than the model's interval anyway (refused by default: "
                             "most points would be interpolated or missing, and those are never flagged)")
    _add_registry_option(detect)
    _add_config_options(detect)
    _add_json_option(detect, '{"events": n, "points": n, "out": folder, "files": [...]}')

    gen = _command(sub, common, "generate", cmd_generate, "write a realistic sample data set with labelled incidents")
    gen.add_argument("--out", type=Path, required=True, help="CSV or Parquet file to write")
    gen.add_argument("--points", type=int, default=4032, help="points per metric (default 4032: two weeks at 5 min)")
    gen.add_argument("--freq", default="5min", help="sampling interval (default 5min)")
    gen.add_argument("--metrics", default="requests,cpu,latency_ms", help="comma-separated metric names")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--long", action="store_true", help="write long form (timestamp, metric, value)")

    _add_models_parser(sub, common)
    _add_store_parser(sub, common)
    _add_alerts_parser(sub, common)

    demo = _command(sub, common, "demo", cmd_demo, "generate sample data, train, detect and report")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for everything (default ./demo-output)")
    demo.add_argument("--seed", type=int, default=0)
    _add_registry_option(demo)
    _add_config_options(demo)

    report = _command(sub, common, "report", cmd_report, "write the alert report of what is new in a workspace")
    report.add_argument("workspace", type=Path, help="the flows' workspace folder (data/ in a deployment)")
    report.add_argument("--report-url", default=None, help="base URL the reports folder is served at, for alert links")
    report.add_argument("--webhook", default=None, help="POST each new alert as JSON to this URL (undelivered ones wait for the next run)")
    report.add_argument("--alertmanager", default=None, metavar="URL",
                        help="send open alerts (firing) and resolutions to this Alertmanager's /api/v2/alerts")

    serve = _command(sub, common, "serve-metrics", cmd_serve_metrics, "serve a workspace's scores as Prometheus metrics on /metrics")
    serve.add_argument("--workspace", type=Path, required=True, help="the flows' workspace folder (data/ in a deployment)")
    serve.add_argument("--port", type=int, default=9464, help="port to listen on (default 9464)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")

    bench = _command(sub, common, "benchmark", cmd_benchmark, "measure detection quality on a labelled corpus in the NAB layout")
    bench.add_argument("corpus", type=Path, help="folder with data/<category>/<file>.csv and labels/combined_windows.json")
    bench.add_argument("--protocol", choices=BENCHMARK_PROTOCOLS, default="batch",
                       help="batch: fit and detect on each whole file; stream: causal, train on the first 15%% then score forward, "
                            "refitting when the history has grown by half; stream-daily: the same, refitting once a day as the train flow does")
    bench.add_argument("--out", type=Path, required=True, help="folder for per-file results and summary.json/summary.md")
    bench.add_argument("--jobs", type=int, default=0, help="files run in parallel (default: one per CPU core)")
    bench.add_argument("--files", action="append", default=[], metavar="GLOB",
                       help="only files whose 'category/file.csv' matches, e.g. 'realAWS*/*' (repeatable)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(bench)
    _add_json_option(bench, "the summary that summary.json holds")
    return parser


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """``--debug`` and ``-q``: on the top parser (default False) and on every subcommand (default suppressed)."""
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="only print errors and result paths")


def _command(sub: Any, common: argparse.ArgumentParser, name: str, func: Any, summary: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``func``, accepts the global options, and describes itself with ``func``'s docstring."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=_doc(func) or None, parents=[common])
    parser.set_defaults(func=func)
    return parser


def _group(sub: Any, common: argparse.ArgumentParser, name: str, summary: str, description: str, dest: str) -> Any:
    """A subcommand that only holds actions (``models``, ``store``): its own subparsers."""
    parser = sub.add_parser(name, help=summary, description=description, parents=[common])
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


def _add_models_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    msub = _group(sub, common, "models", "list, inspect, promote, roll back and prune registry models; set their policy",
                  "Manage the model registry folder (--registry, $ANOMALY_REGISTRY, or models/).", "models_command")
    lst = _command(msub, common, "list", cmd_models_list, "every model with its versions and aliases")
    _add_json_option(lst, "one object per model")
    show = _command(msub, common, "show", cmd_models_show, "the versions of one model: created, data range, threshold, loss, aliases")
    show.add_argument("name")
    show.add_argument("--workspace", type=Path, default=None,
                      help="workspace whose alert marks give the precision line (default: $ANOMALY_WORKSPACE, else ./data if it exists)")
    _add_json_option(show, "one object per version")
    promote = _command(msub, common, "promote", cmd_models_promote, "point an alias (default production) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=_version_arg, help="e.g. 000003 or 3")
    promote.add_argument("--alias", default="production")
    rollback = _command(msub, common, "rollback", cmd_models_rollback, "point an alias back at the version it had before")
    rollback.add_argument("name")
    rollback.add_argument("--alias", default="production")
    prune = _command(msub, common, "prune", cmd_models_prune, "delete old versions, never one an alias points to")
    prune.add_argument("name")
    prune.add_argument("--keep", type=int, required=True, help="how many of the newest versions to keep")
    for action in (lst, show, promote, rollback, prune):
        _add_registry_option(action)
    _add_policy_parser(msub, common)


def _add_policy_parser(msub: Any, common: argparse.ArgumentParser) -> None:
    psub = _group(msub, common, "policy", "show, set, list or roll back a model's policy (scoring, threshold, events)",
                  POLICY_DESCRIPTION, "policy_command")
    show = _command(psub, common, "show", cmd_policy_show, "the policy in effect: its record and settings, or 'as trained'")
    change = _command(psub, common, "set", cmd_policy_set, "record a new policy: the current one with --set changes")
    change.add_argument("--set", dest="overrides", action="append", required=True, metavar="SECTION.KEY=VALUE",
                        help="change one policy setting, e.g. --set threshold.k=5 (repeatable; "
                             "sections: scoring, threshold, events)")
    change.add_argument("--note", default="", help="why, kept with the record (shown by 'history')")
    history = _command(psub, common, "history", cmd_policy_history, "every policy record, oldest first; the current one marked")
    rollback = _command(psub, common, "rollback", cmd_policy_rollback, "make the record before the current one current again")
    for action in (show, change, history, rollback):
        action.add_argument("name")
        _add_registry_option(action)


def _add_store_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ssub = _group(sub, common, "store", "inspect and repair a raw store (the ingest flows' store/ folder)",
                  "Inspect the raw store of a workspace (data/store in a deployment) and repair one "
                  "poisoned by points far from the clock.", "store_command")
    lst = _command(ssub, common, "list", cmd_store_list, "every metric: first and last stored point, watermark, whether it needs a repair")
    held = _command(ssub, common, "quarantine", cmd_store_quarantine, "the points refused as implausible, with the reason and origin")
    series = _command(ssub, common, "series", cmd_store_series, "every stored series: its store name, metric name and labels")
    _add_json_option(series, "one object per series")
    repair = _command(ssub, common, "repair", cmd_store_repair, "move points past the clock (or outside given bounds) to quarantine")
    repair.add_argument("--metric", action="append", default=[], help="only this metric (repeatable; default: all)")
    repair.add_argument("--drop-after", metavar="TIME", help="remove points after TIME (default: now + ANOMALY_STORE_MAX_AHEAD, 1 day)")
    repair.add_argument("--drop-before", metavar="TIME", help="remove points before TIME (default: ANOMALY_STORE_EARLIEST, 1970-01-01)")
    for action in (lst, held, series, repair):
        action.add_argument("store", type=Path, help="the store folder, e.g. data/store")


def _add_alerts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    asub = _group(sub, common, "alerts", "list and show a workspace's alerts; mark them; export the marks as labels",
                  "People's feedback on the alerts of a workspace (--workspace, $ANOMALY_WORKSPACE, or data/): "
                  "marks are kept in reports/marks.json with who, when and why.", "alerts_command")
    lst = _command(asub, common, "list", cmd_alerts_list, "the alerts, newest first, with their marks")
    lst.add_argument("--model", help="only this model's alerts")
    lst.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0 for all)")
    _add_json_option(lst, "one object per alert")
    show = _command(asub, common, "show", cmd_alerts_show, "one alert's facts and every mark it was given")
    show.add_argument("id")
    _add_json_option(show, '{"alert": {...}, "marks": [...]}')
    mark = _command(asub, common, "mark", cmd_alerts_mark, "mark an alert confirmed, false-positive or expected")
    mark.add_argument("id")
    kind = mark.add_mutually_exclusive_group(required=True)
    kind.add_argument("--false-positive", dest="mark", action="store_const", const="false-positive",
                      help="nothing was wrong: kept out of later training data, counted against precision")
    kind.add_argument("--expected", dest="mark", action="store_const", const="expected",
                      help="real but expected (a deploy, maintenance): kept out of later training data, counted apart")
    kind.add_argument("--confirmed", dest="mark", action="store_const", const="confirmed",
                      help="a real incident: counted for precision, exported as an anomaly window")
    mark.add_argument("--note", default="", help="why, kept with the mark and shown in the next report")
    mark.add_argument("--silence", metavar="DURATION", help="do not announce new alerts of this series for DURATION (e.g. 6h, 30min, 2d)")
    mark.add_argument("--by", default=None, help="who marks (default: $USER)")
    export = _command(asub, common, "export", cmd_alerts_export, "write the marks as NAB-style labels the benchmark reads")
    export.add_argument("--out", type=Path, required=True, help="folder for data/<model>/<metric>.csv and labels/combined_windows.json")
    for action in (lst, show, mark, export):
        action.add_argument("--workspace", type=Path, default=None,
                            help="the flows' workspace folder (default: $ANOMALY_WORKSPACE, else ./data)")


def _version_arg(text: str) -> str | int:
    """``3`` on the command line means version ``000003``."""
    return int(text) if text.isdigit() and len(text) < 6 else text


def _add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", type=Path, help="registry folder (default: $ANOMALY_REGISTRY, else ./models)"
    )


def _add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print one JSON document on stdout instead of text: {what}")


def _doc(func: Any) -> str:
    return (func.__doc__ or "").strip()


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML or JSON detector configuration")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set training.epochs=10 (repeatable)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    """Fit a detector on DATA (normal history) and publish it as the next
    version of --name in the registry, or write it to the plain folder --out."""
    from anomaly.core.detector import LSTMAutoencoderDetector
    from anomaly.ops.registry import ModelRegistry, check_name

    config = load_config(args.config, args.overrides)
    if args.promote and not args.name:
        raise ConfigError("--promote sets a registry alias: give --name too")
    if args.name:  # fail before training, not after
        check_name(args.name)
        if args.promote:
            check_name(args.promote, "alias")
    detector = LSTMAutoencoderDetector(config).fit(args.data, callbacks=[_log_epoch])
    summary = f"(metrics {detector.metrics_}, threshold {detector.threshold_:.4g}, {len(detector.history_.train_loss)} epochs)"
    if args.out:
        print(f"model: {detector.save(args.out)}  {summary}")
        return 0
    registry = ModelRegistry(args.registry)
    published = registry.publish(detector, args.name)
    print(f"model: {args.name} version {published.version} at {published.path}  {summary}")
    if args.promote:
        registry.promote(args.name, published.version, args.promote)
        print(f"{args.promote} -> {published.version}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Score DATA and write OUT/scores.csv, OUT/events.csv and OUT/events.json.

    With --name, a registry version (verified against its manifest) scores
    DATA without refitting: --version or --alias picks it, else the one
    'production' points to, else the latest. With --model, a plain model
    folder does. With neither, a detector is fitted on DATA and detects in it.
    Data sampled more coarsely than the model's interval is refused unless
    --allow-resample.
    """
    from anomaly.core.detector import LSTMAutoencoderDetector
    from anomaly.ops.registry import ModelRegistry
    from anomaly.ops.results import write_results

    if (args.version or args.alias) and not args.name:
        raise ConfigError("--version and --alias choose a registry version: give --name too")
    model, version = str(args.model or ""), ""
    if args.name:
        loaded = ModelRegistry(args.registry).load(args.name, args.version, args.alias)
        detector, model, version = loaded.detector, args.name, loaded.version.version
    elif args.model:
        detector = LSTMAutoencoderDetector.load(args.model)
    else:  # fitted on DATA's own grid (fit warns when a configured preprocess.freq differs from it)
        detector = LSTMAutoencoderDetector(load_config(args.config, args.overrides))
        detector.fit(args.data, callbacks=[_log_epoch])
    fitted_here = not (args.name or args.model)
    scores = detector.score(args.data, context=args.context, allow_resample=args.allow_resample or fitted_here)
    events = detector.events(scores, model=model, version=version)
    paths = write_results(scores.to_frame(), events, args.out)
    if args.json:
        _print_json({"events": len(events), "points": len(scores.score), "out": args.out, "files": paths})
        return 0
    print(f"{len(events)} event(s) in {len(scores.score)} points; results in {args.out}/")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a sample data set (and its incident labels next to it)."""
    from anomaly.evaluation.synthetic import generate
    from anomaly.ops.results import write_table

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    sample = generate(args.points, freq=args.freq, metrics=metrics, seed=args.seed)
    frame = sample.to_long() if args.long else sample.frame.reset_index(names="timestamp")
    write_table(frame, args.out)
    labels = args.out.with_name(args.out.stem + ".incidents.csv")
    sample.incidents_frame().to_csv(labels, index=False)
    print(f"data: {args.out}\nincidents: {labels}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate sample metrics, train on the clean history, detect in the rest, compare with the labels."""
    from anomaly.demo import run_demo

    config = load_config(args.config, args.overrides)
    summary = run_demo(args.out, config=config, seed=args.seed, registry=args.registry, on_epoch=_log_epoch)
    for line in summary.lines():
        print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the alert report of what the score runs found since the last report, as the scheduled flows do.

    For running the pipeline from cron or by hand; the Prefect flows call the same function.
    An alert the webhook refuses for good (a redirect, a 4xx other than 408/429) is printed
    as rejected, named in the next report, and does not hold up the others.
    """
    from anomaly.ops.reports import headline, write_report

    if not args.workspace.is_dir():
        raise DataError(f"workspace {str(args.workspace)!r} is not a folder")
    report = write_report(args.workspace, report_url=args.report_url, webhook=args.webhook, alertmanager=args.alertmanager)
    print(headline(report.document))
    for kind, path in report.paths.items():
        print(f"{kind + ':':<10}{path}")
    if args.webhook:
        d = report.delivery
        print(f"webhook:  {d['delivered']} delivered, {d['undelivered']} waiting, {d['parked']} rejected")
        for item in d["rejected"]:  # refused for good: not retried, kept in reports/state.json under "parked"
            print(f"  rejected {item['key']} ({item['metric'] or 'no metric'}): {item['reason']}")
    manager = report.delivery.get("alertmanager")
    if manager:
        print(f"alertmanager: {manager['firing']} firing, {manager['resolved']} resolved" + (f", not delivered: {manager['error']}" if manager["error"] else ""))
    return 0


def cmd_serve_metrics(args: argparse.Namespace) -> int:
    """Serve each series' latest score, threshold, expected value and band, and open alerts, for Prometheus to scrape.

    Every scrape reads what the latest score run and report left in the workspace. Runs until
    interrupted (Ctrl-C or SIGTERM).
    """
    import signal
    import threading

    from anomaly.ops.exporter import serve_metrics

    server = serve_metrics(args.workspace, args.port, args.host)
    print(f"serving {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):  # a timed wait, so signals are handled promptly
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the detector over every file of a labelled corpus (NAB layout) and score it.

    Writes OUT/<category>/<file>.events.csv and .scores.csv per file, then
    OUT/summary.json and OUT/summary.md: event precision, recall and F1
    (Orion's overlap rule), the NAB standard score of the alerts, and seconds
    per file, per category and overall. Files run in parallel; rerunning the
    same command resumes where an interrupted run stopped.
    """
    from anomaly.evaluation.benchmark import Benchmark, summary_markdown

    if args.jobs < 0:
        raise ConfigError(f"--jobs must be 0 (one per core) or more, got {args.jobs}")
    config = load_config(args.config, args.overrides)
    bench = Benchmark(args.corpus, args.out, args.protocol, config, args.jobs, args.files)
    summary = bench.run(progress=False if args.no_progress else None)
    if args.json:
        _print_json(summary)
        return 0
    print(summary_markdown(summary).split("\n\n")[1])
    print(f"summary: {args.out / 'summary.json'}  ({summary['files']} files)")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every model in the registry, one line each."""
    from anomaly.ops.registry import ModelRegistry, models_table

    registry = ModelRegistry(args.registry)
    table = models_table(registry)
    if args.json:
        _print_json(table.to_dict(orient="records"))
        return 0
    print(f"registry: {registry.root}")
    print(table.to_string(index=False) if len(table) else "(no models)")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    """The versions of one model, newest first, and its alert precision as marked in the workspace."""
    from anomaly.ops.registry import ModelRegistry, versions_table

    table = versions_table(ModelRegistry(args.registry), args.name)
    if args.json:
        _print_json(table.to_dict(orient="records"))
        return 0
    print(table.to_string(index=False))
    line = _marked_precision(args.workspace, args.name)
    if line:
        print(line)
    return 0


def _marked_precision(workspace: Path | None, name: str) -> str | None:
    """``alert precision as marked (data): 67% (…)`` for ``models show``; None without a workspace folder.

    The workspace is the one given, else ``$ANOMALY_WORKSPACE``, else ``./data``
    when it exists (``models show`` also runs where there is no workspace).
    """
    from anomaly.ops.marks import load_marks, precision, precision_text
    from anomaly.ops.workspace import Workspace

    space = Workspace.resolve(workspace)
    if not space.root.is_dir():
        if workspace is not None:
            raise DataError(f"workspace {excerpt(str(workspace), 300)} is not a folder")
        return None
    try:
        row = precision(load_marks(space), [name])[0]
    except DataError as exc:  # the versions are still worth showing
        return f"alert precision as marked: not read ({exc})"
    return f"alert precision as marked ({space.root}): {precision_text(row)}"


def _workspace(path: Path | None) -> Any:
    """The workspace of an ``alerts`` command: it must be a folder."""
    from anomaly.ops.workspace import Workspace

    space = Workspace.resolve(path)
    if not space.root.is_dir():
        raise DataError(f"workspace {excerpt(str(space.root), 300)} is not a folder (--workspace, $ANOMALY_WORKSPACE, or ./data)")
    return space


def cmd_alerts_list(args: argparse.Namespace) -> int:
    """The alerts the score runs raised, newest first, with their current marks."""
    from anomaly.ops.marks import alerts_table

    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or more, got {args.limit}")
    table = alerts_table(_workspace(args.workspace), model=args.model, limit=args.limit or None)
    if args.json:
        _print_json(table.to_dict(orient="records"))
        return 0
    print(table.to_string(index=False) if len(table) else "(no alerts)")
    return 0


def cmd_alerts_show(args: argparse.Namespace) -> int:
    """One alert: its span, peak, severity and model, then every mark it was given, oldest first."""
    from anomaly.ops.marks import find_alert, load_marks

    space = _workspace(args.workspace)
    row = find_alert(space, args.id)
    history = load_marks(space).history(str(row["id"]))
    if args.json:
        _print_json({"alert": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()},
                     "marks": [m.to_json() for m in history]})  # fmt: skip
        return 0
    print(f"alert {row['id']}: model {row['model']}, metric(s) {row['metric']}")
    print(f"  {row['start']} .. {row['end']}{'' if bool(row['closed']) else ' (open)'}, severity {row['severity']}, "
          f"peak {float(row['peak_score']):.4g} against {float(row['threshold']):.4g}")  # fmt: skip
    if not history:
        print("  not marked")
    for i, m in enumerate(history):
        state = "current" if i == len(history) - 1 else "replaced"
        until = f", silenced until {_when(m.silence_until)}" if m.silence_until else ""
        print(f"  {_when(m.at)}  {m.mark:<14} by {m.by} ({state}){until}" + (f": {' '.join(m.note.split())}" if m.note else ""))
    return 0


def cmd_alerts_mark(args: argparse.Namespace) -> int:
    """Mark an alert. False-positive and expected alerts are kept out of the next training of their model;
    --silence keeps new alerts of the same series from being announced for that long (the report lists
    them as silenced). Marking again replaces the alert's mark; every mark stays in its history."""
    from anomaly.ops.marks import mark_alert

    space = _workspace(args.workspace)
    record = mark_alert(space, args.id, args.mark, note=args.note, silence=args.silence, by=args.by)
    until = ""
    if record.silence_until:
        until = f"; new alerts of {', '.join(record.metrics) or record.model} silenced until {_when(record.silence_until)} UTC"
    print(f"alert {record.alert} ({record.model}): {record.mark} by {record.by}{until}")
    return 0


def cmd_alerts_export(args: argparse.Namespace) -> int:
    """Write every marked series' stored points and its confirmed marks as anomaly windows, in the NAB layout:
    'anomaly benchmark OUT' then measures the product on the team's own marked history."""
    from anomaly.ops.marks import export_labels
    from anomaly.ops.results import check_out_folder

    check_out_folder(args.out, "--out")
    result = export_labels(_workspace(args.workspace), args.out)
    print(f"{len(result.files)} series, {result.windows} anomaly window(s): {result.labels}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from anomaly.ops.registry import ModelRegistry

    version = ModelRegistry(args.registry).promote(args.name, args.version, args.alias)
    print(f"{args.name}: {args.alias} -> {version}")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from anomaly.ops.registry import ModelRegistry

    version = ModelRegistry(args.registry).rollback(args.name, args.alias)
    print(f"{args.name}: {args.alias} rolled back to {version}")
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    from anomaly.ops.registry import ModelRegistry

    removed = ModelRegistry(args.registry).prune(args.name, args.keep)
    print(f"{args.name}: removed {', '.join(removed) if removed else 'nothing'}")
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    """The model's current policy record and every setting it holds, or 'as trained' when it has none."""
    from anomaly.ops.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    registry.require_versions(args.name)
    record = registry.policy(args.name)
    if record is None:
        print(f"{args.name}: as trained (no policy record: each version scores with the policy it was trained with)")
        return 0
    note = f"  note: {record.note}" if record.note else ""
    print(f"{args.name}: policy p{record.id}, set {_when(record.created_at)}{note}")
    for key, value in _settings(record.policy).items():
        print(f"  {key} = {_setting_text(value)}")
    return 0


def cmd_policy_set(args: argparse.Namespace) -> int:
    """Record a new policy for NAME: the one in effect (the current record, else the
    production version's own, else the latest's) with the --set changes. Every
    version of the model uses it from the next score run; nothing is retrained.
    Model sections (preprocess, window, model, training) change only by training."""
    from anomaly.ops.registry import ModelRegistry

    overrides = setting_overrides(args.overrides)
    for section, values in overrides.items():
        if section not in POLICY_SECTIONS:
            raise ConfigError(
                f"--set {excerpt(f'{section}.{next(iter(values))}')}: {section!r} is not a policy section "
                f"({', '.join(POLICY_SECTIONS)}); train a new version to change it"
            )
    registry = ModelRegistry(args.registry)
    loaded = registry.load(args.name)
    current = loaded.detector.policy
    policy = current.replace(**overrides)
    loaded.detector.with_policy(policy)  # a policy this version cannot take is refused now, not at the next score run
    record = registry.set_policy(args.name, policy, args.note)
    print(f"{args.name}: policy p{record.id} ({_changes(current, policy)}); used from the next score run")
    return 0


def cmd_policy_history(args: argparse.Namespace) -> int:
    """Every policy record of the model, oldest first, the current one marked."""
    from anomaly.ops.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    registry.require_versions(args.name)
    records = registry.policy_history(args.name)
    current = registry.policy(args.name)
    if not records:
        print(f"{args.name}: no policy records (each version scores as trained)")
        return 0
    for record in records:
        mark = "current" if current is not None and record.id == current.id else "-"
        print(f"p{record.id}  {_when(record.created_at)}  {mark:<7}  {record.note or '-'}")
    if current is None:
        print("(none current: each version scores as trained)")
    return 0


def cmd_policy_rollback(args: argparse.Namespace) -> int:
    """Make the policy record before the current one current again (none before it: as trained)."""
    from anomaly.ops.registry import ModelRegistry

    previous = ModelRegistry(args.registry).rollback_policy(args.name)
    print(f"{args.name}: policy rolled back to {f'p{previous.id}' if previous is not None else 'as trained'}")
    return 0


def _settings(policy: Policy) -> dict[str, Any]:
    """``{"section.key": value}`` of every setting of a policy, in its sections' order."""
    return {f"{section}.{key}": value for section, values in policy.to_dict().items() for key, value in values.items()}


def _setting_text(value: Any) -> str:
    """A setting as ``--set`` takes it back: strings bare, everything else as JSON (null, true, 4.5)."""
    return value if isinstance(value, str) else json.dumps(value)


def _changes(before: Policy, after: Policy) -> str:
    """``threshold.k 4.5 -> 3.0, ...``: the settings that differ, or ``no change``."""
    old, new = _settings(before), _settings(after)
    changed = [f"{k} {_setting_text(old[k])} -> {_setting_text(v)}" for k, v in new.items() if old[k] != v]
    return ", ".join(changed) or "no change"


def _when(created_at: str) -> str:
    """A record's ISO time as ``2026-01-05 10:00:03`` (UTC)."""
    return created_at[:19].replace("T", " ")


def cmd_store_list(args: argparse.Namespace) -> int:
    """Every metric of the store, one line each."""
    from anomaly.io.store import RawStore

    table = RawStore.existing(args.store).summary()
    print(f"store: {args.store}")
    print(table.to_string(index=False) if len(table) else "(no metrics)")
    return 0


def cmd_store_quarantine(args: argparse.Namespace) -> int:
    """The quarantined points, one line each."""
    from anomaly.io.store import RawStore

    table = RawStore.existing(args.store).quarantined()
    print(table.to_string(index=False) if len(table) else "(nothing quarantined)")
    return 0


def cmd_store_series(args: argparse.Namespace) -> int:
    """Every stored series with the metric name and labels its source
    recorded (store/series.json); a series without an entry has none."""
    from anomaly.io.catalogue import series_of
    from anomaly.io.store import RawStore

    store = RawStore.existing(args.store)
    catalogue = store.series()
    rows = [series_of(catalogue, m) for m in store.metrics()]
    if args.json:
        _print_json([{"series": s.key, "name": s.name, "labels": dict(sorted(s.labels.items()))} for s in rows])
        return 0
    for s in rows:
        labels = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
        print(f"{s.key}  {s.name}{{{labels}}}")
    if not rows:
        print("(no metrics)")
    return 0


def cmd_store_repair(args: argparse.Namespace) -> int:
    """Move the stored points later than --drop-after (default: the clock plus
    a day) or earlier than --drop-before (default: 1970) to quarantine, so a
    metric poisoned by a far-future point gets its real watermark back.
    Crash-safe like an append; 'anomaly store quarantine' lists what moved."""
    from anomaly.io.store import RawStore

    store = RawStore.existing(args.store)
    result = store.repair(args.metric or None, after=args.drop_after, before=args.drop_before)
    moved = ", ".join(f"{m} {n}" for m, n in result.removed_by_metric.items()) or "nothing to remove"
    print(f"{args.store}: moved {result.removed} point(s) to quarantine ({moved})")
    for metric, mark in result.watermarks.items():
        print(f"  {metric}: watermark {mark.isoformat()}")
    return 0


def _print_json(document: Any) -> None:
    """One JSON document on stdout: NaN and infinities as null, paths and numpy numbers as plain values."""
    print(json.dumps(_plain(document), indent=2, allow_nan=False, default=str))


def _plain(value: Any) -> Any:
    """``value`` with only JSON types: a non-finite float becomes None, a Path its text, a numpy scalar its Python value."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_epoch(result: EpochResult) -> None:
    val = f"{result.val_loss:.5f}" if result.val_loss is not None else "-"
    log.info("epoch %d/%d  loss %.5f  val %s%s", result.epoch, result.epochs, result.train_loss, val,
             "  (best)" if result.best else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        if args.command in FOLDER_OUTS and args.out is not None:  # a file in the way fails now, not after training
            from anomaly.ops.results import check_out_folder

            check_out_folder(args.out, "--out")
        return int(args.func(args))
    except AnomalyError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an unexpected failure: still one line unless debugging
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
