"""The detector's incident suite under any configuration: what it catches, and how close clean days come.

``tests/test_detector.py`` checks one configuration (a small model) passes
this suite; this script prints how another fares, so a change of defaults
can be judged on the product's own incidents as well as on a labelled
corpus. A model is fitted on a clean week of 5-minute ``requests``; each
incident kind is injected alone at its place on the next day
(:data:`anomaly.INCIDENT_SPANS`) and scored with the week as
context; two clean days are scored too. Prints figures, never a verdict.

    .venv/bin/python benchmarks/incidents.py                      # the defaults
    .venv/bin/python benchmarks/incidents.py --set window.size=100 --set training.seed=1
    .venv/bin/python benchmarks/incidents.py --data-seed 3 --threads 2   # another realisation, two threads
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from anomaly import INCIDENT_KINDS, INCIDENT_SPANS, LSTMAutoencoderDetector, clean_metrics, inject, load_config

DAY = 288  # 5-minute points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML/JSON config (default: the library defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as under pytest-xdist; `make test` runs serially, with every core)")
    parser.add_argument("--data-seed", type=int, default=11, help="realisation of the clean metric (default 11, the test suite's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    frame = clean_metrics(DAY * 9, metrics=("requests",), seed=args.data_seed)
    week, after = frame.iloc[: DAY * 7], frame.iloc[DAY * 7 :]
    detector = LSTMAutoencoderDetector(config).fit(week, progress=False)
    clean = detector.score(after, context=week)
    print(f"window {config.window.size}, hidden {config.model.hidden_size}, threshold {detector.threshold_:.4g}")
    print(f"clean days: {len(detector.events(clean))} events, highest score {np.nanmax(clean.score):.3g}")
    caught = 0
    for kind in INCIDENT_KINDS:
        offset, length = INCIDENT_SPANS[kind]
        data, incident = inject(frame, kind, "requests", DAY * 7 + offset, length, seed=1)
        events = detector.detect(data.iloc[DAY * 7 :], context=data.iloc[: DAY * 7])
        hit = events[(events.start <= incident.end) & (events.end >= incident.start)]
        caught += bool(len(hit))
        peak = f"{hit.peak_score.max():.3g}" if len(hit) else "-"
        print(f"{kind:16s} {'caught' if len(hit) else 'missed':7s} peak {peak:>7s}  events that day {len(events)}")
    print(f"caught {caught} of {len(INCIDENT_KINDS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
