"""The ``anomaly`` command: a thin front end over the library.

Every subcommand parses arguments, calls library functions and prints where
its results went. User errors (bad data, bad config, a missing model) exit
with status 2 and one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomaly.evaluation.benchmark import PROTOCOLS
from anomaly.core.config import DetectorConfig, load_config
from anomaly.errors import AnomalyError, ConfigError, DataError, excerpt
from anomaly.ops.results import check_out_folder, write_results, write_table
from anomaly.core.training import EpochResult

log = logging.getLogger("anomaly")

EXIT_USER_ERROR = 2
#: Commands whose ``--out`` is a folder to write into (``generate --out`` is a file).
FOLDER_OUTS = frozenset({"train", "detect", "demo", "benchmark"})
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
  anomaly detect data.csv --out results/          fit and detect in one go, no registry
  anomaly demo                                    all of it on sample data
  anomaly benchmark nab/ --protocol stream --out bench/
                                                   quality on a labelled corpus (NAB layout)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors and result paths")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="fit a detector on a data file and save it", description=_doc(cmd_train))
    train.add_argument("data", type=Path, help="CSV or Parquet file of normal history")
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="publish as the next version of this model in the registry")
    where.add_argument("--out", type=Path, help="write the fitted model to this plain folder instead")
    train.add_argument("--promote", metavar="ALIAS", help="also point ALIAS (e.g. production) at the new version")
    _add_registry_option(train)
    _add_config_options(train)
    train.set_defaults(func=cmd_train)

    detect = sub.add_parser("detect", help="score a data file and write scores and events", description=_doc(cmd_detect))
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
    detect.set_defaults(func=cmd_detect)

    gen = sub.add_parser("generate", help="write a realistic sample data set with labelled incidents", description=_doc(cmd_generate))
    gen.add_argument("--out", type=Path, required=True, help="CSV or Parquet file to write")
    gen.add_argument("--points", type=int, default=4032, help="points per metric (default 4032: two weeks at 5 min)")
    gen.add_argument("--freq", default="5min", help="sampling interval (default 5min)")
    gen.add_argument("--metrics", default="requests,cpu,latency_ms", help="comma-separated metric names")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--long", action="store_true", help="write long form (timestamp, metric, value)")
    gen.set_defaults(func=cmd_generate)

    _add_models_parser(sub)
    _add_store_parser(sub)

    demo = sub.add_parser("demo", help="generate sample data, train, detect and report", description=_doc(cmd_demo))
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for everything (default ./demo-output)")
    demo.add_argument("--seed", type=int, default=0)
    _add_registry_option(demo)
    _add_config_options(demo)
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="write the alert report of what is new in a workspace", description=_doc(cmd_report))
    report.add_argument("workspace", type=Path, help="the flows' workspace folder (data/ in a deployment)")
    report.add_argument("--report-url", default=None, help="base URL the reports folder is served at, for alert links")
    report.add_argument("--webhook", default=None, help="POST each new alert as JSON to this URL (undelivered ones wait for the next run)")
    report.set_defaults(func=cmd_report)

    bench = sub.add_parser("benchmark", help="measure detection quality on a labelled corpus in the NAB layout", description=_doc(cmd_benchmark))
    bench.add_argument("corpus", type=Path, help="folder with data/<category>/<file>.csv and labels/combined_windows.json")
    bench.add_argument("--protocol", choices=PROTOCOLS, default="batch",
                       help="batch: fit and detect on each whole file; stream: causal, train on the first 15%% then score forward")
    bench.add_argument("--out", type=Path, required=True, help="folder for per-file results and summary.json/summary.md")
    bench.add_argument("--jobs", type=int, default=0, help="files run in parallel (default: one per CPU core)")
    bench.add_argument("--files", action="append", default=[], metavar="GLOB",
                       help="only files whose 'category/file.csv' matches, e.g. 'realAWS*/*' (repeatable)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(bench)
    bench.set_defaults(func=cmd_benchmark)
    return parser


def _add_models_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list, inspect, promote, roll back and prune registry models",
                            description="Manage the model registry folder (--registry, $ANOMALY_REGISTRY, or models/).")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    lst = msub.add_parser("list", help="every model with its versions and aliases")
    lst.set_defaults(func=cmd_models_list)
    show = msub.add_parser("show", help="the versions of one model: created, data range, threshold, loss, aliases")
    show.add_argument("name")
    show.set_defaults(func=cmd_models_show)
    promote = msub.add_parser("promote", help="point an alias (default production) at a version")
    promote.add_argument("name")
    promote.add_argument("version", type=_version_arg, help="e.g. 000003 or 3")
    promote.add_argument("--alias", default="production")
    promote.set_defaults(func=cmd_models_promote)
    rollback = msub.add_parser("rollback", help="point an alias back at the version it had before")
    rollback.add_argument("name")
    rollback.add_argument("--alias", default="production")
    rollback.set_defaults(func=cmd_models_rollback)
    prune = msub.add_parser("prune", help="delete old versions, never one an alias points to")
    prune.add_argument("name")
    prune.add_argument("--keep", type=int, required=True, help="how many of the newest versions to keep")
    prune.set_defaults(func=cmd_models_prune)
    for action in (lst, show, promote, rollback, prune):
        _add_registry_option(action)


def _add_store_parser(sub: Any) -> None:
    store = sub.add_parser("store", help="inspect and repair a raw store (the ingest flows' store/ folder)",
                           description="Inspect the raw store of a workspace (data/store in a deployment) and repair one "
                                       "poisoned by points far from the clock.")
    ssub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    lst = ssub.add_parser("list", help="every metric: first and last stored point, watermark, whether it needs a repair")
    lst.set_defaults(func=cmd_store_list)
    held = ssub.add_parser("quarantine", help="the points refused as implausible, with the reason and origin")
    held.set_defaults(func=cmd_store_quarantine)
    repair = ssub.add_parser("repair", help="move points past the clock (or outside given bounds) to quarantine",
                             description=_doc(cmd_store_repair))
    repair.add_argument("--metric", action="append", default=[], help="only this metric (repeatable; default: all)")
    repair.add_argument("--drop-after", metavar="TIME", help="remove points after TIME (default: now + ANOMALY_STORE_MAX_AHEAD, 1 day)")
    repair.add_argument("--drop-before", metavar="TIME", help="remove points before TIME (default: ANOMALY_STORE_EARLIEST, 1970-01-01)")
    repair.set_defaults(func=cmd_store_repair)
    for action in (lst, held, repair):
        action.add_argument("store", type=Path, help="the store folder, e.g. data/store")


def _version_arg(text: str) -> str | int:
    """``3`` on the command line means version ``000003``."""
    return int(text) if text.isdigit() and len(text) < 6 else text


def _add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", type=Path, help="registry folder (default: $ANOMALY_REGISTRY, else ./models)"
    )


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
    print(f"{len(events)} event(s) in {len(scores.score)} points; results in {args.out}/")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a sample data set (and its incident labels next to it)."""
    from anomaly.evaluation.synthetic import generate

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
    report = write_report(args.workspace, report_url=args.report_url, webhook=args.webhook)
    print(headline(report.document))
    for kind, path in report.paths.items():
        print(f"{kind + ':':<10}{path}")
    if args.webhook:
        d = report.delivery
        print(f"webhook:  {d['delivered']} delivered, {d['undelivered']} waiting, {d['parked']} rejected")
        for item in d["rejected"]:  # refused for good: not retried, kept in reports/state.json under "parked"
            print(f"  rejected {item['key']} ({item['metric'] or 'no metric'}): {item['reason']}")
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
    print(summary_markdown(summary).split("\n\n")[1])
    print(f"summary: {args.out / 'summary.json'}  ({summary['files']} files)")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    """Every model in the registry, one line each."""
    from anomaly.ops.registry import ModelRegistry, models_table

    registry = ModelRegistry(args.registry)
    table = models_table(registry)
    print(f"registry: {registry.root}")
    print(table.to_string(index=False) if len(table) else "(no models)")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    """The versions of one model, newest first."""
    from anomaly.ops.registry import ModelRegistry, versions_table

    print(versions_table(ModelRegistry(args.registry), args.name).to_string(index=False))
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
