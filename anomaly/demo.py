"""The built-in end-to-end run behind ``anomaly demo`` (and ``make demo``).

Generates two weeks of realistic metrics with labelled incidents, trains on
the clean first week, publishes the model to the registry and promotes it,
loads the production version back as a scheduled run would,
scores the second week with the first as context, writes scores and events,
and checks the events against the labels. It uses only public library calls,
so it doubles as a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from anomaly.core.config import DetectorConfig
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.evaluation.metrics import EventScores, matched_per_metric, score_events_per_metric
from anomaly.ops.registry import ModelRegistry
from anomaly.ops.results import write_results, write_table
from anomaly.evaluation.synthetic import generate
from anomaly.core.training import EpochResult

DEMO_MODEL = "demo"


@dataclass
class DemoSummary:
    """Where the demo wrote things and how well it did."""

    out: Path
    data: Path
    model: Path
    version: str
    results: list[Path]
    n_events: int
    n_incidents: int
    quality: EventScores
    missed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        q = self.quality
        out = [
            f"sample data:    {self.data}",
            f"model:          {self.model}  (registry version {self.version}, production)",
            *[f"results:        {p}" for p in self.results],
            f"events found:   {self.n_events} for {self.n_incidents} injected incidents",
            f"event quality:  precision {q.precision:.2f}, recall {q.recall:.2f}, F1 {q.f1:.2f} "
            f"(tp {q.tp}, fp {q.fp}, fn {q.fn}; an event counts only on the metric it names)",
        ]
        if self.missed:
            out.append(f"missed:         {', '.join(self.missed)}")
        return out


def run_demo(
    out: Path,
    *,
    config: DetectorConfig | None = None,
    seed: int = 0,
    registry: str | Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> DemoSummary:
    """Run the whole demo into folder ``out`` and return its summary.

    The model is published to the registry (``registry``, else
    ``$ANOMALY_REGISTRY``, else ``models/``) as model ``demo``, promoted to
    production, and the new week is scored with the version loaded back
    from the registry, as the scheduled score flow does.
    """
    out.mkdir(parents=True, exist_ok=True)
    sample = generate(seed=seed)
    data_path = out / "sample_metrics.csv"
    write_table(sample.frame.reset_index(names="timestamp"), data_path)
    incidents = sample.incidents_frame()
    incidents.to_csv(out / "sample_incidents.csv", index=False)

    first_incident = min(i.start for i in sample.incidents)
    history = sample.frame[sample.frame.index < first_incident]
    new = sample.frame[sample.frame.index >= first_incident]
    detector = LSTMAutoencoderDetector(config).fit(history, callbacks=[on_epoch] if on_epoch else [])
    # Labels exist here, so the version records how it did on them.
    fitted_quality = score_events_per_metric(incidents, detector.detect(new, context=history))
    store = ModelRegistry(registry)
    published = store.publish(detector, DEMO_MODEL, evaluation={"labelled_events": fitted_quality.to_dict()})
    store.promote(DEMO_MODEL, published.version)

    scheduled = store.load(DEMO_MODEL, alias="production").detector
    scores = scheduled.score(new, context=history)
    events = scheduled.events(scores, model=DEMO_MODEL, version=published.version)
    results = write_results(scores.to_frame(), events, out / "results")

    quality = score_events_per_metric(incidents, events)
    caught, _ = matched_per_metric(incidents, events)
    missed = [f"{row.kind} on {row.metric}" for row, hit in zip(incidents.itertuples(), caught) if not hit]
    return DemoSummary(
        out, data_path, published.path, published.version, results, len(events), len(incidents), quality, missed
    )


@dataclass(frozen=True)
class PipelineDemoData:
    """Files for the scheduled-pipeline demo: what has arrived so far, what arrives next, the answer key."""

    history: Path
    new: Path
    incidents: Path


def write_pipeline_demo_data(folder: Path, *, seed: int = 0) -> PipelineDemoData:
    """Write generated metrics as two arrivals: the clean history, then the days with incidents.

    The pipeline demo ingests the first file, trains and scores; then
    ingests the second as the next scheduled run would, and scores only it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sample = generate(seed=seed)
    first_incident = min(i.start for i in sample.incidents)
    frame = sample.frame.reset_index(names="timestamp")
    history, new = folder / "history.csv", folder / "new.csv"
    write_table(frame[frame["timestamp"] < first_incident], history)
    write_table(frame[frame["timestamp"] >= first_incident], new)
    incidents = folder / "incidents.csv"
    sample.incidents_frame().to_csv(incidents, index=False)
    return PipelineDemoData(history, new, incidents)
