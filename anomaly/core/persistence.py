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
import warnings
import zipfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from anomaly.core.config import MAX_PARAMETERS, DetectorConfig
from anomaly.errors import AnomalyError, ModelFileError, excerpt
from anomaly.core.fileio import read_json, write_json
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.scaling import Scaler
from anomaly.core.thresholds import THRESHOLDS
from anomaly.core.training import History, resolve_device

if TYPE_CHECKING:
    from anomaly.core.detector import LSTMAutoencoderDetector

FORMAT_VERSION = 1
CONFIG, WEIGHTS, SCALER, STATE, HISTORY = "config.json", "weights.pt", "scaler.json", "detector.json", "history.json"
MODEL_FILES: tuple[str, ...] = (CONFIG, WEIGHTS, SCALER, STATE, HISTORY)
#: Largest JSON file of a model read: real ones are a few KB, so this only refuses a hostile one unread.
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Room in a weights file beyond its tensors' bytes (the archive's names and headers take a few KB).
WEIGHTS_SLACK_BYTES = 1024 * 1024
#: Longest sampling interval a saved model may claim: a year.
MAX_FREQ_SECONDS = 366 * 24 * 3600
# Lines of torch's load errors that are advice, not the reason (one suggests weights_only=False).
_TORCH_ADVICE = ("weights_only", "trust", "documentation", "file an issue")


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
    """Rebuild a fitted detector from a folder written by :func:`save_detector`.

    Everything is checked before anything large is built: each JSON file's
    size, the configuration's bounds, the model's parameter count for its
    metrics, and the weights file's size and contents.
    """
    from anomaly.core.detector import LSTMAutoencoderDetector

    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"model folder not found: {str(folder)!r}")
    absent = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if absent:
        raise ModelFileError(f"model folder {str(folder)!r} is missing {absent[0]!r}")
    state = _read(folder, STATE)
    _check_format(state, folder)
    try:
        config = DetectorConfig.from_dict(with_saved_defaults(_read(folder, CONFIG)))
        detector = LSTMAutoencoderDetector(config)
        detector.metrics_ = _metrics(state["metrics"], config, folder)
        detector.freq_ = _frequency(state["freq_seconds"], folder)
        detector.scaler_ = Scaler.from_dict(_read(folder, SCALER))
        threshold_cls = THRESHOLDS[state["threshold_method"]]
        detector.thresholds_ = {
            m: threshold_cls.from_state(config.threshold, s) for m, s in state["thresholds"].items()
        }
        detector.combined_threshold_ = threshold_cls.from_state(config.threshold, state["combined_threshold"])
        detector.threshold_ = detector.combined_threshold_.threshold_
        detector.training_data_ = state["training_data"]
        detector.history_ = History.from_dict(_read(folder, HISTORY))
    except ModelFileError:
        raise
    except AnomalyError as exc:
        raise ModelFileError(f"model folder {str(folder)!r} is invalid: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: {excerpt(exc)}") from exc
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


def _read(folder: Path, name: str) -> Any:
    return read_json(folder / name, ModelFileError, MAX_JSON_BYTES)


def _metrics(value: Any, config: DetectorConfig, folder: Path) -> list[str]:
    """The saved metric names, refused when the model they imply is past the parameter cap."""
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: metrics {excerpt(value)}")
    parameters = config.model.parameter_count(len(value))
    if parameters > MAX_PARAMETERS:
        raise ModelFileError(
            f"model folder {str(folder)!r} is invalid: {len(value):,} metrics make a model of {parameters:,} "
            f"parameters, more than the {MAX_PARAMETERS:,} allowed"
        )
    return list(value)


def _frequency(value: Any, folder: Path) -> pd.Timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_FREQ_SECONDS:
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: freq_seconds {excerpt(value)}")
    return pd.Timedelta(seconds=float(value))


def _load_model(path: Path, n_features: int, config: DetectorConfig, device: torch.device) -> LSTMAutoencoder:
    weights = read_state_dict(path, weights_limit(config.model.parameter_count(n_features)))
    model = LSTMAutoencoder(n_features, config.model)
    _check_fits(weights, model, path)
    model.load_state_dict(weights)
    return model.to(device).eval()


def weights_limit(parameters: int) -> int:
    """The most bytes a weights file of ``parameters`` may hold: 8 per parameter (float64) plus archive slack."""
    return 8 * parameters + WEIGHTS_SLACK_BYTES


def read_state_dict(path: Path, limit: int) -> dict[str, torch.Tensor]:
    """A state_dict of plain float tensors from a torch zip archive, or one ModelFileError line saying why not.

    The file's size and its records' declared sizes are checked against
    ``limit`` before torch reads it; torch then unpickles with
    ``weights_only=True``, so nothing in the file can run, and its own
    multi-line advice (which includes loading unsafely) never reaches the user.
    """
    size = path.stat().st_size
    if size > limit:
        raise _not_plain(path, f"it is {size:,} bytes, more than the {limit:,} bytes this model's parameters need")
    if not zipfile.is_zipfile(path):
        raise _not_plain(path, "not a torch zip archive")
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _not_plain(path, f"a damaged zip archive: {excerpt(str(exc))}") from None
    if declared > limit:
        raise _not_plain(path, f"its records unpack to {declared:,} bytes, more than the {limit:,} bytes this model's parameters need")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols, with the same advice
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or hostile file
        raise _not_plain(path, _torch_reason(exc)) from None
    _check_plain(weights, path)
    return weights


def _not_plain(path: Path, reason: str) -> ModelFileError:
    return ModelFileError(f"cannot load weights from {str(path)!r}: not a plain state_dict of tensors ({reason})")


def _torch_reason(exc: Exception) -> str:
    """Torch's reason in a few words: its first line of substance, never its advice to load unsafely."""
    lines = (line.strip() for line in str(exc).splitlines())
    useful = [line for line in lines if line and not any(word in line for word in _TORCH_ADVICE)]
    return f"{type(exc).__name__}: {useful[0][:120]}" if useful else type(exc).__name__


def _check_plain(weights: Any, path: Path) -> None:
    if not isinstance(weights, dict):
        raise _not_plain(path, f"it holds {_a(type(weights).__name__)}")
    for key, value in weights.items():
        if not isinstance(key, str):
            raise _not_plain(path, f"a key is {excerpt(key)}")
        if not isinstance(value, torch.Tensor):
            raise _not_plain(path, f"{excerpt(key)} holds {_a(type(value).__name__)}")
        if value.layout != torch.strided:
            raise _not_plain(path, f"{excerpt(key)} holds a {value.layout} tensor")
        if not value.is_floating_point():
            raise _not_plain(path, f"{excerpt(key)} holds a tensor of {value.dtype}")


def _check_fits(weights: dict[str, torch.Tensor], model: LSTMAutoencoder, path: Path) -> None:
    """The weights name exactly the model's parameters, each in its shape."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights]
    unknown = [key for key in weights if key not in expected]
    wrong = [key for key, tensor in expected.items() if key in weights and weights[key].shape != tensor.shape]
    if missing:
        reason = f"{missing[0]!r} is missing"
    elif unknown:
        reason = f"{excerpt(unknown[0])} is not a parameter of the model"
    elif wrong:
        key = wrong[0]
        reason = f"{key!r} has shape {tuple(weights[key].shape)}, the model needs {tuple(expected[key].shape)}"
    else:
        return
    raise ModelFileError(f"weights in {str(path)!r} do not fit the configured model: {reason}")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _check_format(state: Any, folder: Path) -> None:
    if not isinstance(state, dict):
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: {excerpt(state)}")
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
