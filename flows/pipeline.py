"""Pipeline: ingest → train → score → report in one run, and the README's main command.

``python -m flows.pipeline`` runs it on built-in generated data: a first
run ingests two weeks of history, trains and promotes one model per metric
and scores the newest slice; a second run, as the next scheduled one would,
ingests the new data (with injected incidents), scores only those points and
reports the events. It prints where the registry versions, scores and
reports are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

from anomaly.demo import write_pipeline_demo_data
from anomaly.evaluation.metrics import score_events_per_metric
from anomaly.ops.workspace import Workspace
from flows.ingest import SourceSpec, ingest_flow
from flows.report import report_flow
from flows.score import score_flow
from flows.train import train_flow


@flow(name="pipeline")
def pipeline_flow(
    source: SourceSpec,
    workspace: str | None = None,
    registry: str | None = None,
    groups: dict[str, Any] | None = None,
    config_path: str | None = None,
    history: str = "14D",
    validation: str = "1D",
    train: bool = True,
    report_url: str | None = None,
    webhook: str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the flows in order as subflows; each publishes its own artifacts.

    ``train=False`` skips training, as the score runs between daily
    trainings do. A group that fails in training or scoring does not stop
    the rest: the pipeline goes on and returns what each step said.
    """
    ingested = ingest_flow(source, workspace)
    trained = (
        train_flow(workspace, registry, groups, config_path, history, validation, return_state=True) if train else None
    )
    scored = score_flow(workspace, registry, groups, report=False, return_state=True)
    reported = report_flow(workspace, report_url, webhook)
    return {"ingested": ingested, "trained": _outcome(trained), "scored": _outcome(scored), "report": reported}


def _outcome(state: Any) -> Any:
    """A subflow's results, or what failed in it and the results of the rest (the later steps still ran)."""
    if state is None:
        return None
    if state.is_completed():
        return state.result()
    data = state.result(raise_on_failure=False)
    return {"failed": state.message, "results": data if isinstance(data, list) else []}


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline twice on generated data and print where everything went."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo-output", help="workspace folder for data, scores and reports")
    parser.add_argument("--registry", default=None, help="registry folder (default $ANOMALY_REGISTRY or models/)")
    parser.add_argument("--config", default=None, help="detector configuration file (YAML or JSON)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        fresh_demo_folder(out)
    except FileExistsError as exc:
        parser.error(str(exc))
    demo = write_pipeline_demo_data(out / "incoming")
    first = pipeline_flow(str(demo.history), str(out), args.registry, config_path=args.config)
    second = pipeline_flow(str(demo.new), str(out), args.registry, config_path=args.config, train=False)
    for line in [*summary_lines(first, second, demo.incidents), quality_line(out, demo.incidents)]:
        print(line)
    return 0


DEMO_MARKER = ".anomaly-demo"


def fresh_demo_folder(out: Path) -> None:
    """Start the demo from an empty workspace, removing only a folder an earlier demo made.

    A folder that holds anything else is refused rather than emptied, so a
    mistyped ``--out`` cannot delete a real workspace.
    """
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).exists():
            raise FileExistsError(f"{str(out)!r} is not empty and was not made by the demo; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by python -m flows.pipeline; removed and rewritten by the next demo run\n")


def summary_lines(first: dict[str, Any], second: dict[str, Any], incidents: Path) -> list[str]:
    lines = []
    trained = first["trained"]
    if isinstance(trained, dict):
        lines.append(f"training FAILED: {trained['failed']}")
        trained = trained["results"]
    lines += [f"registry version: {r['path']}  ({r['reason']})" for r in trained]
    for run in (first, second):
        scored = run["scored"]
        if isinstance(scored, dict):
            lines.append(f"scoring FAILED: {scored['failed']}")
            scored = scored["results"]
        lines += [f"scores:           {r['scores_file']}  ({r['points']} points, {r['events']} events)"
                  for r in scored if r["status"] == "scored"]  # fmt: skip
        lines.append(f"report:           {run['report']['path']}  ({run['report']['new']} new alert(s))")
    lines.append(f"injected incidents (the answer key): {incidents}")
    return lines


def quality_line(workspace: Path, incidents: Path) -> str:
    """How the events of the demo's second run compare with the injected incidents."""
    expected = pd.read_csv(incidents, parse_dates=["start", "end"])
    events = Workspace(workspace).alerts()
    q = score_events_per_metric(expected, events[events["start"] >= expected["start"].min()])
    return (
        f"event quality vs the answer key, matched per metric: precision {q.precision:.2f}, recall {q.recall:.2f}, "
        f"F1 {q.f1:.2f} (tp {q.tp}, fp {q.fp}, fn {q.fn})"
    )


if __name__ == "__main__":
    sys.exit(main())
