"""The model registry folder: complete, immutable, verifiable versions.

Layout (``models/`` by default)::

    <root>/<name>/versions/000001/   manifest.json metadata.json config.json weights.pt
                                     scaler.json detector.json history.json training.png
    <root>/<name>/aliases.json        {"production": "000002", "staging": "000003"}
    <root>/<name>/alias-history.json  {"production": ["000001", "000002"]}  (for rollback)
    <root>/<name>/counter.json        the highest version number ever published
    <root>/<name>/.lock               serialises version numbers and alias updates

Guarantees, each with a test:

- *Atomic publish.* A version is written into a staging folder next to
  ``versions/`` and renamed into place, so it appears whole or not at all. A
  staging folder left by a killed writer is removed by the next write.
- *No lost updates.* Version numbers and alias changes are made under a
  cross-process file lock; alias files are replaced with ``os.replace``.
- *Verified loads.* ``manifest.json`` holds the sha256 and size of every file;
  loading checks them all first and names the file that differs.
- *Nothing runs on load.* JSON everywhere, weights with ``weights_only=True``.
- *Immutability.* A published version is never modified; pruning removes
  whole versions, never one an alias points to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from filelock import FileLock

from anomaly.errors import AnomalyError, ModelFileError
from anomaly.fileio import (
    atomic_write_json,
    fsync_dir,
    fsync_tree,
    pid_alive,
    read_json,
    sha256_file,
    write_json,
)
from anomaly.persistence import (
    FORMAT_VERSION,
    library_versions,
    load_detector,
    write_detector_files,
)
from anomaly.plotting import PLOT_LOCK, figure

if TYPE_CHECKING:
    import pandas as pd

    from anomaly.detector import LSTMAutoencoderDetector

REGISTRY_ENV = "ANOMALY_REGISTRY"
DEFAULT_ROOT = Path("models")
DEFAULT_ALIAS = "production"
MANIFEST, METADATA, PLOT = "manifest.json", "metadata.json", "training.png"
ALIASES, ALIAS_HISTORY, LOCK, COUNTER = "aliases.json", "alias-history.json", ".lock", "counter.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^\d{6}$")
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
LOCK_TIMEOUT_S = 60.0


class RegistryError(AnomalyError, ValueError):
    """A registry operation cannot be done: unknown name, version or alias, or a protected version."""


@dataclass(frozen=True)
class ModelVersion:
    """One published version: where it is and what its metadata says."""

    name: str
    version: str
    path: Path
    metadata: dict[str, Any]


def resolve_root(root: str | Path | None = None) -> Path:
    """The registry folder: the argument, else ``$ANOMALY_REGISTRY``, else ``models/``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_ROOT)


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str, what: str = "model name") -> str:
    """Reject names that could escape the folder or confuse tools (``..``, separators, absolute paths)."""
    if not _valid_name(name):
        raise RegistryError(
            f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, without '..' or path separators"
        )
    return name


def check_version(version: str | int) -> str:
    """Versions are six digits (``000042``); an int is accepted and padded."""
    text = f"{version:06d}" if isinstance(version, int) and not isinstance(version, bool) and version > 0 else str(version)
    if not _VERSION.fullmatch(text):
        raise RegistryError(f"invalid version {version!r}: expected six digits such as '000001'")
    return text


class ModelRegistry:
    """Publish, find, verify, load, alias and prune detector versions in one folder."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = resolve_root(root)

    # -- publishing --------------------------------------------------------------

    def publish(
        self,
        detector: "LSTMAutoencoderDetector",
        name: str,
        *,
        run_id: str | None = None,
        evaluation: Mapping[str, Any] | None = None,
        parent: str | None = None,
    ) -> ModelVersion:
        """Write ``detector`` as the next version of ``name`` and return it.

        The files are written and fsynced in a staging folder first; only the
        final rename (under the lock, which also picks the number) makes the
        version visible. ``parent`` defaults to the version ``production``
        points to, the one this version would replace.
        """
        check_name(name)
        detector._check_fitted()
        model_dir = self.root / name
        if parent is None and (model_dir / ALIASES).exists():
            parent = self.aliases(name).get(DEFAULT_ALIAS)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        self._clean_leftovers(model_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=model_dir))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared registry from its readers
            write_detector_files(detector, staging)
            metadata = _metadata(detector, name, run_id, evaluation, parent)
            write_json(staging / METADATA, metadata)
            _plot_history(detector, staging / PLOT)
            write_json(staging / MANIFEST, build_manifest(staging))
            fsync_tree(staging)
            with self._lock(name):
                version = self._next_version(name)
                target = model_dir / "versions" / version
                os.rename(staging, target)
                fsync_dir(target.parent)
                self._record_version(name, version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelVersion(name, version, target, metadata)

    def _next_version(self, name: str) -> str:
        """One past the highest number ever used, so a pruned number is never handed out again.

        Called under the lock. The counter file may lag a version renamed into
        place just before a crash, hence the max with what is on disk.
        """
        existing = self.versions(name)
        counter = self.root / name / COUNTER
        last = int(read_json(counter, ModelFileError).get("last_version", 0)) if counter.exists() else 0
        version = f"{max(last, int(existing[-1]) if existing else 0) + 1:06d}"
        return version

    def _record_version(self, name: str, version: str) -> None:
        atomic_write_json(self.root / name / COUNTER, {"last_version": int(version)})

    def _clean_leftovers(self, model_dir: Path) -> None:
        """Remove staging/trash folders whose writing process is gone (killed mid-write)."""
        for entry in model_dir.iterdir():
            if entry.name.startswith((_STAGING_PREFIX, _TRASH_PREFIX)) and not _owner_alive(entry.name):
                shutil.rmtree(entry, ignore_errors=True)

    # -- finding and loading -----------------------------------------------------

    def names(self) -> list[str]:
        """Model names that have at least one published version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _valid_name(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (staging folders are never listed)."""
        folder = self.root / check_name(name) / "versions"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir())

    def resolve(self, name: str, version: str | int | None = None, alias: str | None = None) -> str:
        """The version meant: explicit ``version``, else ``alias``, else ``production``, else the latest."""
        available = self._require_versions(name)
        if version is not None:
            wanted = check_version(version)
            if wanted not in available:
                raise RegistryError(f"model {name!r} has no version {wanted}; versions: {', '.join(available)}")
            return wanted
        aliases = self.aliases(name)
        if alias is not None:
            check_name(alias, "alias")
            if alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise RegistryError(f"model {name!r} has no alias {alias!r}; aliases: {known}")
            return aliases[alias]
        return aliases.get(DEFAULT_ALIAS, available[-1])

    def path(self, name: str, version: str | int | None = None, alias: str | None = None) -> Path:
        return self.root / name / "versions" / self.resolve(name, version, alias)

    def verify(self, name: str, version: str | int | None = None, alias: str | None = None) -> Path:
        """Check every file against the manifest; raise :class:`ModelFileError` naming the first that differs."""
        folder = self.path(name, version, alias)
        verify_manifest(folder)
        return folder

    def load(
        self, name: str, version: str | int | None = None, alias: str | None = None
    ) -> "LSTMAutoencoderDetector":
        """The verified detector of a version (see :meth:`resolve` for which one)."""
        folder = self.verify(name, version, alias)
        detector = load_detector(folder)
        detector.registry_version_ = ModelVersion(name, folder.name, folder, read_json(folder / METADATA, ModelFileError))
        return detector

    def get(self, name: str, version: str | int | None = None, alias: str | None = None) -> ModelVersion:
        """Metadata of a version, without loading the model."""
        folder = self.path(name, version, alias)
        return ModelVersion(name, folder.name, folder, read_json(folder / METADATA, ModelFileError))

    def _require_versions(self, name: str) -> list[str]:
        available = self.versions(name)
        if not available:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"no model named {name!r} in registry {str(self.root)!r}; models: {known}")
        return available

    # -- aliases -----------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` for ``name`` (empty when none are set)."""
        path = self.root / check_name(name) / ALIASES
        return dict(read_json(path, ModelFileError)) if path.exists() else {}

    def promote(self, name: str, version: str | int, alias: str = DEFAULT_ALIAS) -> str:
        """Point ``alias`` at ``version``, remembering the previous target for :meth:`rollback`."""
        check_name(alias, "alias")
        with self._lock(name):
            target = self.resolve(name, version=version)
            aliases, history = self.aliases(name), self._alias_history(name)
            if aliases.get(alias) != target:
                history.setdefault(alias, [])
                if alias in aliases and (not history[alias] or history[alias][-1] != aliases[alias]):
                    history[alias].append(aliases[alias])
                history[alias].append(target)
                aliases[alias] = target
                self._write_aliases(name, aliases, history)
        return target

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> str:
        """Point ``alias`` back at the version it pointed to before the last promotion."""
        check_name(alias, "alias")
        with self._lock(name):
            aliases, history = self.aliases(name), self._alias_history(name)
            trail = history.get(alias, [])
            if alias not in aliases or len(trail) < 2:
                raise RegistryError(f"alias {alias!r} of model {name!r} has no earlier version to roll back to")
            previous = trail[-2]
            if previous not in self.versions(name):
                raise RegistryError(f"cannot roll {alias!r} of {name!r} back to {previous}: that version was pruned")
            trail.pop()
            aliases[alias] = previous
            self._write_aliases(name, aliases, history)
        return aliases[alias]

    def _alias_history(self, name: str) -> dict[str, list[str]]:
        path = self.root / name / ALIAS_HISTORY
        return {k: list(v) for k, v in read_json(path, ModelFileError).items()} if path.exists() else {}

    def _write_aliases(self, name: str, aliases: dict[str, str], history: dict[str, list[str]]) -> None:
        atomic_write_json(self.root / name / ALIAS_HISTORY, history)
        atomic_write_json(self.root / name / ALIASES, aliases)

    # -- retention ---------------------------------------------------------------

    def prune(self, name: str, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` versions, sparing every aliased one; returns what went."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise RegistryError(f"keep must be an integer >= 0, got {keep!r}")
        removed: list[str] = []
        with self._lock(name):
            available = self._require_versions(name)
            protected = set(self.aliases(name).values())
            candidates = available[: max(len(available) - keep, 0)]
            for version in candidates:
                if version in protected:
                    continue
                trash = self.root / name / f"{_TRASH_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                os.rename(self.root / name / "versions" / version, trash)  # vanishes whole
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(version)
        return removed

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / LOCK), timeout=LOCK_TIMEOUT_S):
            yield


# -- tables for people ------------------------------------------------------------


def models_table(registry: ModelRegistry) -> "pd.DataFrame":
    """One row per model: versions, latest, aliases."""
    import pandas as pd

    rows = []
    for name in registry.names():
        versions = registry.versions(name)
        aliases = registry.aliases(name)
        rows.append(
            {
                "model": name,
                "versions": len(versions),
                "latest": versions[-1],
                "created": _short_time(registry.get(name, versions[-1]).metadata.get("created_at")),
                "aliases": ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-",
            }
        )
    return pd.DataFrame(rows, columns=["model", "versions", "latest", "created", "aliases"])


def versions_table(registry: ModelRegistry, name: str) -> "pd.DataFrame":
    """One row per version of ``name``, newest first: what a reviewer needs to pick one."""
    import pandas as pd

    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases(name).items():
        by_version.setdefault(version, []).append(alias)
    rows = []
    for version in reversed(registry._require_versions(name)):
        meta = registry.get(name, version).metadata
        data = meta.get("data", {})
        rows.append(
            {
                "version": version,
                "created": _short_time(meta.get("created_at")),
                "data": f"{_short_time(data.get('start'))} .. {_short_time(data.get('end'))} ({data.get('rows', '?')} rows)",
                "metrics": ",".join(meta.get("metrics", [])),
                "threshold": f"{meta['threshold']['method']} {meta['threshold']['combined']:.4g}",
                "val_loss": _fmt(meta.get("training", {}).get("best_val_loss")),
                "epochs": meta.get("training", {}).get("epochs_run", "?"),
                "aliases": ", ".join(sorted(by_version.get(version, []))) or "-",
            }
        )
    return pd.DataFrame(rows)


def _short_time(text: str | None) -> str:
    return "?" if not text else datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# -- manifest --------------------------------------------------------------------


def build_manifest(folder: Path) -> dict[str, Any]:
    """sha256 and size of every file in ``folder`` (except the manifest itself)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    return {
        "format_version": FORMAT_VERSION,
        "files": {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in files},
    }


def verify_manifest(folder: Path) -> None:
    """Raise :class:`ModelFileError` naming the first missing, changed or truncated file."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"version folder {str(folder)!r} has no {MANIFEST}: it is incomplete or not a registry version")
    manifest = read_json(path, ModelFileError)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(_valid_entry(e) for e in files.values()):
        raise ModelFileError(f"{str(path)!r} is not a valid manifest: expected files with sha256 and size")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(folder)!r} was written in registry format {version!r}, newer than this version of the "
            f"library understands ({FORMAT_VERSION}); upgrade the anomaly package"
        )
    for name, expected in sorted(files.items()):
        if not _valid_name(name):
            raise ModelFileError(f"{str(path)!r} lists an invalid file name {name!r}")
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{str(file)!r} is missing (listed in {MANIFEST})")
        size = file.stat().st_size
        if size != expected["size"]:
            raise ModelFileError(f"{str(file)!r} has {size} bytes, the manifest says {expected['size']}: truncated or replaced")
        if sha256_file(file) != expected["sha256"]:
            raise ModelFileError(f"{str(file)!r} does not match its sha256 in {MANIFEST}: it was changed")


def _valid_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int)
    )


# -- helpers ---------------------------------------------------------------------


def _metadata(
    detector: "LSTMAutoencoderDetector",
    name: str,
    run_id: str | None,
    evaluation: Mapping[str, Any] | None,
    parent: str | None,
) -> dict[str, Any]:
    """Who, when and what: everything a person needs to judge a version without loading it."""
    cfg = detector._checked_config()
    history = detector.history_
    return {
        "name": name,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "run_id": run_id or uuid.uuid4().hex,
        "parent_version": parent,
        "data": detector.training_data_,
        "metrics": detector.metrics_,
        "freq_seconds": detector.freq_.total_seconds(),
        "threshold": {
            "method": cfg.threshold.method,
            "combined": detector.threshold_,
            "per_metric": {m: t.threshold_ for m, t in detector.thresholds_.items()},
        },
        "training": {
            "epochs_run": len(history.train_loss),
            "best_epoch": history.best_epoch,
            "best_val_loss": _best(history.val_loss),
            "final_train_loss": history.train_loss[-1] if history.train_loss else None,
            "seconds": history.seconds,
            "device": history.device,
        },
        "evaluation": dict(evaluation) if evaluation else None,
        "versions": library_versions(),
    }


def _best(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _plot_history(detector: "LSTMAutoencoderDetector", path: Path) -> None:
    """The loss curve as a PNG, drawn off-screen, one figure at a time (see :mod:`anomaly.plotting`)."""
    with PLOT_LOCK:
        _draw_history(detector, path)


def _draw_history(detector: "LSTMAutoencoderDetector", path: Path) -> None:
    history = detector.history_
    fig = figure(6, 3.5)
    axes = fig.add_subplot()
    epochs = range(1, len(history.train_loss) + 1)
    axes.plot(epochs, history.train_loss, label="training loss")
    if any(v is not None for v in history.val_loss):
        axes.plot(epochs, [float("nan") if v is None else v for v in history.val_loss], label="validation loss")
    if history.best_epoch:
        axes.axvline(history.best_epoch, color="grey", linestyle=":", label=f"best epoch ({history.best_epoch})")
    axes.set_xlabel("epoch")
    axes.set_ylabel("MSE (scaled units)")
    axes.set_yscale("log")
    axes.legend()
    # fixed margins: tight_layout would draw the figure twice, and a daily retrain of
    # a thousand models publishes a thousand of these
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.95)
    fig.savefig(path)


def _owner_alive(folder_name: str) -> bool:
    """Whether the process that made a ``.staging-<pid>-...`` folder still runs."""
    try:
        return pid_alive(int(folder_name.split("-")[1]))
    except (IndexError, ValueError):
        return False


