"""A fitted model on disk: a folder of JSON files, a state_dict and the training residuals.

The folder holds everything needed to score later without the training data
or this code's defaults: the full configuration, scaler parameters, fitted
thresholds, metric names and interval, the loss history, the weights, and
the training residuals a changed policy refits its thresholds from. Nothing
is pickled: JSON for state, ``weights_only=True`` for the tensors and
``allow_pickle=False`` for the residuals, so a folder from elsewhere cannot
run code when loaded. A folder is written next to its destination and
renamed into place, so a failed save never leaves a half-written model where
a good one was. This module knows the files, not the detector: the detector
turns itself into a :class:`ModelState` and back.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from anomaly.core.config import MAX_PARAMETERS, DetectorConfig
from anomaly.core.fileio import read_json, write_json
from anomaly.core.migrations import CURRENT, upgrade
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.scaling import Scaler
from anomaly.core.thresholds import FittedThresholds
from anomaly.core.training import History
from anomaly.errors import AnomalyError, ModelFileError, excerpt

FORMAT_VERSION = CURRENT["model"]
CONFIG, WEIGHTS, SCALER, STATE, HISTORY = "config.json", "weights.pt", "scaler.json", "detector.json", "history.json"
RESIDUALS = "residuals.npz"
#: Files every model folder has; one written in format 2 or later also has :data:`RESIDUALS`.
MODEL_FILES: tuple[str, ...] = (CONFIG, WEIGHTS, SCALER, STATE, HISTORY)
#: Largest JSON file of a model read: real ones are a few KB, so this only refuses a hostile one unread.
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Room in a weights file beyond its tensors' bytes (the archive's names and headers take a few KB).
WEIGHTS_SLACK_BYTES = 1024 * 1024
#: Longest sampling interval a saved model may claim: a year.
MAX_FREQ_SECONDS = 366 * 24 * 3600
# Lines of torch's load errors that are advice, not the reason (one suggests weights_only=False).
_TORCH_ADVICE = ("weights_only", "trust", "documentation", "file an issue")


@dataclass(frozen=True)
class ModelState:
    """Everything a fitted detector is, as plain values: what a model folder holds."""

    config: DetectorConfig
    metrics: list[str]
    freq: pd.Timedelta
    scaler: Scaler
    thresholds: FittedThresholds
    training_data: dict[str, Any]
    history: History
    weights: dict[str, torch.Tensor]
    residuals: np.ndarray | None  # (rows, metrics) scaled - reconstructed on the training grid, NaN where missing
    filled: np.ndarray | None  # (rows, metrics) interpolated training points


def required_files(format_version: int) -> tuple[str, ...]:
    """The model files a folder of ``format_version`` must have (and a registry manifest must list)."""
    return MODEL_FILES + ((RESIDUALS,) if format_version >= 2 else ())


def save_model(state: ModelState, path: str | Path) -> Path:
    """Write ``state`` to folder ``path``, replacing an existing one only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_model_files(state, staging)
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_model_files(state: ModelState, folder: Path) -> None:
    """The model files, written into an existing (staging) folder."""
    record = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "metrics": state.metrics,
        "freq_seconds": state.freq / pd.Timedelta("1s"),
        **state.thresholds.to_state(),
        "training_data": state.training_data,
        "versions": library_versions(),
    }
    write_json(folder / CONFIG, state.config.to_dict())
    write_json(folder / SCALER, state.scaler.to_dict())
    write_json(folder / STATE, record)
    write_json(folder / HISTORY, state.history.to_dict())
    torch.save({k: v.detach().cpu() for k, v in state.weights.items()}, folder / WEIGHTS)
    if state.residuals is not None and state.filled is not None:
        np.savez(folder / RESIDUALS, residuals=state.residuals.astype(np.float64), filled=state.filled.astype(bool))


def read_model(path: str | Path) -> ModelState:
    """The :class:`ModelState` of a folder written by :func:`save_model` (or an earlier release).

    Everything is checked before anything large is built: each file's size,
    the configuration's bounds, the model's parameter count for its
    metrics, and the weights file's size and contents.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"model folder not found: {str(folder)!r}")
    absent = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if absent:
        raise ModelFileError(f"model folder {str(folder)!r} is missing {absent[0]!r}")
    raw_state = _read(folder, STATE)
    _check_format(raw_state, folder)
    try:
        upgraded = upgrade("model", {"config": _read(folder, CONFIG), "state": raw_state}, raw_state["format_version"], f"model folder {str(folder)!r}")
        record = upgraded["state"]
        config = DetectorConfig.from_dict(upgraded["config"])
        metrics = _metrics(record["metrics"], config, folder)
        freq = _frequency(record["freq_seconds"], folder)
        scaler = Scaler.from_dict(_read(folder, SCALER))
        thresholds = FittedThresholds.from_state(config.threshold, record)
        history = History.from_dict(_read(folder, HISTORY))
        training_data = record["training_data"]
    except ModelFileError:
        raise
    except AnomalyError as exc:
        raise ModelFileError(f"model folder {str(folder)!r} is invalid: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: {excerpt(exc)}") from exc
    weights = read_state_dict(folder / WEIGHTS, weights_limit(config.model.parameter_count(len(metrics))))
    _check_fits(weights, _expected_shapes(config, len(metrics)), folder / WEIGHTS)
    residuals, filled = _read_residuals(folder, raw_state["format_version"], len(metrics), training_data)
    return ModelState(config, metrics, freq, scaler, thresholds, training_data, history, weights, residuals, filled)


def build_model(state: ModelState, device: torch.device) -> LSTMAutoencoder:
    """The network of ``state`` with its weights (checked to fit when read), in eval mode on ``device``."""
    model = LSTMAutoencoder(len(state.metrics), state.config.model)
    model.load_state_dict(state.weights)
    return model.to(device).eval()


def _expected_shapes(config: DetectorConfig, n_metrics: int) -> dict[str, torch.Size]:
    """The parameter shapes of the configured network, from a model on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = LSTMAutoencoder(n_metrics, config.model)
    return {key: tensor.shape for key, tensor in model.state_dict().items()}


def _read_residuals(folder: Path, version: int, n_metrics: int, training_data: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The training residuals of a format-2 folder (a 0.1.0 folder has none), checked against the training data's size."""
    if version < 2:
        return None, None
    path = folder / RESIDUALS
    rows = training_data.get("rows") if isinstance(training_data, dict) else None
    if not isinstance(rows, int) or rows < 1:
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: training_data rows {excerpt(rows)}")
    limit = 9 * rows * n_metrics + WEIGHTS_SLACK_BYTES
    if not path.is_file():
        raise ModelFileError(f"model folder {str(folder)!r} is missing {RESIDUALS!r}")
    if path.stat().st_size > limit:
        raise ModelFileError(f"{str(path)!r} is {path.stat().st_size:,} bytes, more than {limit:,} for {rows:,} rows")
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            residuals, filled = np.asarray(data["residuals"], dtype=np.float64), np.asarray(data["filled"], dtype=bool)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"cannot read {str(path)!r}: {excerpt(str(exc))}") from None
    if residuals.shape != (rows, n_metrics) or filled.shape != residuals.shape:
        raise ModelFileError(f"{str(path)!r} holds arrays of shape {residuals.shape}, not ({rows}, {n_metrics})")
    return residuals, filled


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


def _check_fits(weights: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path) -> None:
    """The weights name exactly the model's parameters, each in its shape."""
    missing = [key for key in expected if key not in weights]
    unknown = [key for key in weights if key not in expected]
    wrong = [key for key, shape in expected.items() if key in weights and weights[key].shape != shape]
    if missing:
        reason = f"{missing[0]!r} is missing"
    elif unknown:
        reason = f"{excerpt(unknown[0])} is not a parameter of the model"
    elif wrong:
        key = wrong[0]
        reason = f"{key!r} has shape {tuple(weights[key].shape)}, the model needs {tuple(expected[key])}"
    else:
        return
    raise ModelFileError(f"weights in {str(path)!r} do not fit the configured model: {reason}")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _check_format(state: Any, folder: Path) -> None:
    if not isinstance(state, dict):
        raise ModelFileError(f"model folder {str(folder)!r} has an invalid {STATE}: {excerpt(state)}")
    version = state.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
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
