"""Replay the labelled-corpus benchmark on stored reconstructions (see :mod:`anomaly.evaluation.replay`).

    .venv/bin/python benchmarks/replay.py record ../shared/nab-dev --protocol batch --out replay-batch --jobs 2
    .venv/bin/python benchmarks/replay.py score replay-batch --set threshold.k=4.0 --set events.merge_gap=100
    .venv/bin/python benchmarks/replay.py score replay-suite --out replayed/   # events files, for suite.py report

``record`` runs the benchmark's fits once and keeps every model's
reconstruction; ``score`` prints the summary table under any change of the
policy (``scoring.*``, ``threshold.*``, ``events.*``) in seconds. Prints
figures, never a verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from anomaly import PROTOCOLS, AnomalyError, load_config, record, replay, summary_markdown


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
    play.add_argument("--out", type=Path, default=None, help="also write each file's events there, as a benchmark run does")
    play.add_argument("--config", type=Path, default=None, help="a whole configuration instead of the recorded one")
    play.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            config = load_config(args.config, args.overrides)
            done = record(args.corpus, args.protocol, args.out, config, args.jobs, args.files)
            print(f"recorded {len(done)} files in {args.out}")
        else:
            print(summary_markdown(replay(args.folder, args.overrides, args.config, args.out)), end="")
    except AnomalyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
