"""Save and load a fitted detector as a folder of JSON files and a state_dict.

The folder holds everything needed to score later without the training data
or this code's defaults: the full configuration, scaler parameters, fitted
thresholds, metric names and interval, the loss history and the weights.
Nothing is pickled: JSON for state, ``weights_only=True`` for the tensors, so
a folder from elsewhere cannot run code when loaded. A folder is written next
to its destination and renamed into place, so a failed save never leaves a
half-written model where a good one was.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from anomaly.config import DetectorConfig
from anomaly.errors import AnomalyError, ModelFileError
from anomaly.fileio import read_json, write_json
from anomaly.model import LSTMAutoencoder
from anomaly.scaling import Scaler
from anomaly.thresholds import THRESHOLDS
from anomaly.training import History, resolve_device

if TYPE_CHECKING:
    from anomaly.detector import LSTMAutoencoderDetector

FORMAT_VERSION = 1
CONFIG, WEIGHTS, SCALER, STATE, HISTORY = "config.json", "weights.pt", "scaler.json", "detector.json", "history.json"
MODEL_FILES: tuple[str, ...] = (CONFIG, WEIGHTS, SCALER, STATE, HISTORY)


def save_detector(detector: "LSTMAutoencoderDetector", path: str | Path) -> Path:
    """Write ``detector`` to folder ``path``, replacing an existing one only on success."""
    detector._check_fitted()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_detector_files(detector, staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_detector_files(detector: "LSTMAutoencoderDetector", folder: Path) -> None:
    """The model files, written into an existing (staging) folder."""
    cfg = detector._checked_config()
    state = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "metrics": detector.metrics_,
        "freq_seconds": detector.freq_ / pd.Timedelta("1s"),
        "threshold_method": cfg.threshold.method,
        "thresholds": {m: t.get_state() for m, t in detector.thresholds_.items()},
        "combined_threshold": detector.combined_threshold_.get_state(),
        "training_data": detector.training_data_,
        "versions": library_versions(),
    }
    write_json(folder / CONFIG, cfg.to_dict())
    write_json(folder / SCALER, detector.scaler_.to_dict())
    write_json(folder / STATE, state)
    write_json(folder / HISTORY, detector.history_.to_dict())
    cpu_state = {k: v.detach().cpu() for k, v in detector.model_.state_dict().items()}
    torch.save(cpu_state, folder / WEIGHTS)


def load_detector(path: str | Path) -> "LSTMAutoencoderDetector":
    """Rebuild a fitted detector from a folder written by :func:`save_detector`."""
    from anomaly.detector import LSTMAutoencoderDetector

    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"model folder not found: {str(folder)!r}")
    absent = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if absent:
        raise ModelFileError(f"model folder {str(folder)!r} is missing {absent[0]!r}")
    state = read_json(folder / STATE, ModelFileError)
    _check_format(state, folder)
    try:
        config = DetectorConfig.from_dict(with_saved_defaults(read_json(folder / CONFIG, ModelFileError)))
        detector = LSTMAutoencoderDetector(config)
        detector.metrics_ = [str(m) for m in state["metrics"]]
        detector.freq_ = pd.Timedelta(seconds=float(state["freq_seconds"]))
        detector.scaler_ = Scaler.from_dict(read_json(folder / SCALER, ModelFileError))
        threshold_cls = THRESHOLDS[state["threshold_method"]]
        detector.thresholds_ = {
            m: threshold_cls.from_state(config.threshold, s) for m, s in state["thresholds"].items()
        }
        detector.combined_threshold_ = threshold_cls.from_state(config.threshold, state["combined_threshold"])
        detector.threshold_ = detector.combined_threshold_.threshold_
        detector.training_data_ = state["training_data"]
        detector.history_ = History.from_dict(read_json(folder / HISTORY, ModelFileError))
    except AnomalyError as exc:
        raise ModelFileError(f"model folder {str(folder)!r} is invalid: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: {exc!r}") from exc
    detector.device_ = resolve_device(config.training.device)
    detector.model_ = _load_model(folder / WEIGHTS, len(detector.metrics_), config, detector.device_)
    return detector


def with_saved_defaults(data: Any) -> Any:
    """A saved configuration as the version that wrote it meant it, under today's rules.

    A model is scored as it was validated, whatever today's defaults say:
    one saved before ``scoring.smoothing_time`` and ``scoring.baseline``
    existed smoothed over ``smoothing_span`` points and had no baseline, so
    the missing keys are its old defaults, not today's (600 minutes, 1,000
    points); one saved before ``baseline_exclude`` and ``baseline_warmup``
    kept every point in its baseline and started it after a quarter of it.
    One saved with both smoothing keys set was smoothed by time
    (the time then replaced the span), which today is said by the span being
    null. One saved before ``training.schedule`` existed was trained at a
    constant rate, so its record says so (it matters to whoever refits
    from it).
    """
    if not isinstance(data, dict):
        return data
    if isinstance(data.get("training"), dict) and "schedule" not in data["training"]:
        data = {**data, "training": {**data["training"], "schedule": "constant"}}
    if not isinstance(data.get("scoring"), dict):
        return data
    scoring = dict(data["scoring"])
    scoring.setdefault("smoothing_time", None)
    scoring.setdefault("baseline", 0)
    scoring.setdefault("baseline_exclude", None)  # every point in the baseline, a quarter of it to start
    scoring.setdefault("baseline_warmup", None)
    if scoring.get("smoothing_span") is not None and scoring["smoothing_time"] is not None:
        scoring["smoothing_span"] = None
    return {**data, "scoring": scoring}


def _load_model(path: Path, n_features: int, config: DetectorConfig, device: torch.device) -> LSTMAutoencoder:
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or hostile file
        raise ModelFileError(f"cannot load weights from {str(path)!r}: {exc}") from exc
    model = LSTMAutoencoder(n_features, config.model)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"weights in {str(path)!r} do not fit the configured model: {exc}") from exc
    return model.to(device).eval()


def _check_format(state: dict[str, Any], folder: Path) -> None:
    version = state.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"model folder {str(folder)!r} has no valid format_version in {STATE}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model folder {str(folder)!r} was written in format {version}, newer than this "
            f"version of the library understands ({FORMAT_VERSION}); upgrade the anomaly package"
        )


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's behaviour, for the record."""
    out = {"python": platform.python_version()}
    for name in ("anomaly-pipeline", "torch", "numpy", "pandas", "scikit-learn", "libspot"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished folder onto ``target``; an old one is removed only afterwards."""
    if not target.exists():
        os.replace(staging, target)
        return
    if not target.is_dir():
        raise ModelFileError(f"cannot write the model: {str(target)!r} exists and is not a folder")
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, retired / "model")
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
