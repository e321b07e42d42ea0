"""LSTM-autoencoder anomaly detection for metric streams: the library.

The public API is listed in :data:`__all__` and importable from here
(``from anomaly import LSTMAutoencoderDetector``). Names are loaded on first
use, so ``import anomaly`` (and ``anomaly --help``) stays fast: torch is
imported only by what needs a model. The layers behind them:

- :mod:`anomaly.core`: configuration, data, the model, training, scoring,
  thresholds, events and the detector; it imports nothing above it;
- :mod:`anomaly.io`: where points come from (files, Prometheus, SQL) and the
  raw store;
- :mod:`anomaly.ops`: the workspace, the model registry, scheduled jobs,
  alert reports and webhooks;
- :mod:`anomaly.evaluation`: labelled corpora, metrics, the benchmark and
  generated series.

Nothing here imports Prefect: the flows in ``flows/`` are a front end over it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: Public name → the module that defines it.
_EXPORTS: dict[str, str] = {
    # configuration and errors
    "DetectorConfig": "anomaly.core.config",
    "Policy": "anomaly.core.config",
    "load_config": "anomaly.core.config",
    "AnomalyError": "anomaly.errors",
    "ConfigError": "anomaly.errors",
    "DataError": "anomaly.errors",
    "ModelFileError": "anomaly.errors",
    "NotFittedError": "anomaly.errors",
    # data and detection
    "MetricFrame": "anomaly.core.data",
    "normalise": "anomaly.core.data",
    "read_table": "anomaly.core.data",
    "LSTMAutoencoderDetector": "anomaly.core.detector",
    "Reconstruction": "anomaly.core.reconstruction",
    "Scorer": "anomaly.core.scoring",
    "Scores": "anomaly.core.scoring",
    "FittedThresholds": "anomaly.core.thresholds",
    "AlertTracker": "anomaly.core.events",
    "find_events": "anomaly.core.events",
    "score_step": "anomaly.core.stream",
    "StreamState": "anomaly.core.stream",
    "EpochResult": "anomaly.core.training",
    # sources and store
    "RawStore": "anomaly.io.store",
    "build_source": "anomaly.io.sources",
    "ingest": "anomaly.io.sources",
    # operations
    "Workspace": "anomaly.ops.workspace",
    "ScoreState": "anomaly.ops.workspace",
    "ModelRegistry": "anomaly.ops.registry",
    "LoadedModel": "anomaly.ops.registry",
    "RegistryError": "anomaly.ops.registry",
    "Group": "anomaly.ops.jobs",
    "plan_groups": "anomaly.ops.jobs",
    "train_group": "anomaly.ops.jobs",
    "score_group": "anomaly.ops.jobs",
    "score_groups": "anomaly.ops.jobs",
    "write_report": "anomaly.ops.reports",
    # evaluation
    "Benchmark": "anomaly.evaluation.benchmark",
    "PROTOCOLS": "anomaly.evaluation.benchmark",
    "summary_markdown": "anomaly.evaluation.benchmark",
    "load_corpus": "anomaly.evaluation.corpus",
    "record": "anomaly.evaluation.replay",
    "replay": "anomaly.evaluation.replay",
    "clean_metrics": "anomaly.evaluation.synthetic",
    "generate": "anomaly.evaluation.synthetic",
    "INCIDENT_KINDS": "anomaly.evaluation.synthetic",
    "INCIDENT_SPANS": "anomaly.evaluation.synthetic",
    "inject": "anomaly.evaluation.synthetic",
    "build_suite": "anomaly.evaluation.suite",
    "false_alerts_per_week": "anomaly.evaluation.suite",
    "incident_report": "anomaly.evaluation.suite",
    "suite_counts": "anomaly.evaluation.suite",
    "write_nab_layout": "anomaly.evaluation.suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'anomaly' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
