"""The model registry folder: complete, immutable, verifiable versions.

Layout (``models/`` by default)::

    <root>/<name>/versions/000001/   manifest.json metadata.json config.json weights.pt
                                     scaler.json detector.json history.json training.png
    <root>/<name>/aliases.json        {"production": "000002", "staging": "000003"}
    <root>/<name>/alias-history.json  {"production": ["000001", "000002"]}  (the record; for rollback)
    <root>/<name>/counter.json        the highest version number ever handed out
    <root>/<name>/.lock               serialises version numbers and alias updates

Guarantees, each with a test:

- *Atomic publish.* A version is written into a staging folder next to
  ``versions/`` and renamed into place, so it appears whole or not at all. A
  staging folder left by a killed writer is removed by the next write.
- *No lost updates.* Version numbers and alias changes are made under a
  cross-process file lock; alias files are replaced with ``os.replace``.
  An alias change is committed by its write of ``alias-history.json`` (each
  alias's trail ends at its current version); ``aliases.json`` is the same
  mapping for people and tools, rewritten after it, so a crash between the
  two writes loses nothing and ``aliases()`` always reads the trails.
- *No number handed out twice.* ``counter.json`` is written before a version
  is renamed into place, so no crash lets a pruned number come back.
- *Verified loads.* ``manifest.json`` holds the sha256 and size of every file
  and must list every model file; loading checks them all first and names the
  file that differs.
- *Nothing outside the registry.* Aliases must be six-digit versions that
  exist; symbolic links in a model's folders are refused, never followed.
- *Nothing runs on load.* JSON everywhere, weights with ``weights_only=True``.
- *Immutability.* A published version is never modified; pruning removes
  whole versions, never one an alias points to.
- *One broken version is its own problem.* ``models list``/``show`` mark it
  broken and show the rest; loading it is a one-line :class:`ModelFileError`.
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

from anomaly.errors import AnomalyError, ConfigError, ModelFileError, excerpt
from anomaly.core.fileio import (
    atomic_write_json,
    fsync_dir,
    fsync_tree,
    pid_alive,
    read_json,
    sha256_file,
    write_json,
)
from anomaly.core.config import Policy
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.core.migrations import upgrade
from anomaly.core.persistence import (
    FORMAT_VERSION,
    MAX_JSON_BYTES,
    library_versions,
    required_files,
    write_model_files,
)
from anomaly.ops.plotting import PLOT_LOCK, figure

if TYPE_CHECKING:
    import pandas as pd

REGISTRY_ENV = "ANOMALY_REGISTRY"
DEFAULT_ROOT = Path("models")
DEFAULT_ALIAS = "production"
MANIFEST, METADATA, PLOT = "manifest.json", "metadata.json", "training.png"
ALIASES, ALIAS_HISTORY, LOCK, COUNTER = "aliases.json", "alias-history.json", ".lock", "counter.json"
POLICY = "policy.json"
POLICY_FORMAT = 1
#: Six digits: the last version number a model can have.
MAX_VERSION = 999_999
#: Largest aliases.json, alias-history.json or counter.json read (a trail grows ~12 bytes per promotion).
MAX_STATE_BYTES = 16 * 1024 * 1024
#: Largest manifest.json read: a real one lists eight files in about 1 KB.
MAX_MANIFEST_BYTES = 1024 * 1024
#: Largest file a manifest may list: above the weights of the largest model the config bounds allow.
MAX_VERSION_FILE_BYTES = 1024**3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^[0-9]{6}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"
_STATE_FILES = (ALIASES, ALIAS_HISTORY, COUNTER, POLICY)
_REPAIR = "fix or remove the file"
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


@dataclass(frozen=True)
class PolicyRecord:
    """One version of a model's policy: what it says, when it was set, and why."""

    id: int
    policy: Policy
    created_at: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "policy": self.policy.to_dict(), "created_at": self.created_at, "note": self.note}


@dataclass(frozen=True)
class LoadedModel:
    """A verified version and its detector, under the policy it scores with.

    ``policy`` is the registry's policy record in effect (None: the version's
    own, as trained); ``overridden`` says a deployment changed it further.
    """

    version: ModelVersion
    detector: LSTMAutoencoderDetector
    policy: PolicyRecord | None = None
    overridden: bool = False

    @property
    def policy_id(self) -> str:
        """``p<id>`` of the registry policy in effect, or ``trained``; ``+override`` when a deployment changed it."""
        base = f"p{self.policy.id}" if self.policy is not None else "trained"
        return base + ("+override" if self.overridden else "")


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


def _is_version(value: object) -> bool:
    return isinstance(value, str) and bool(_VERSION.fullmatch(value))


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
        model_dir = self._model_dir(name)
        detector.check_fitted()
        if parent is None:
            parent = self.aliases(name).get(DEFAULT_ALIAS)
        self._last_version(name)  # an invalid or exhausted counter is refused before anything is written
        self.versions_dir(name).mkdir(parents=True, exist_ok=True)
        self._clean_leftovers(model_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=model_dir))
        try:
            staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared registry from its readers
            write_model_files(detector.to_state(), staging)
            metadata = _metadata(detector, name, run_id, evaluation, parent)
            write_json(staging / METADATA, metadata)
            _plot_history(detector, staging / PLOT)
            write_json(staging / MANIFEST, build_manifest(staging))
            fsync_tree(staging)
            with self._lock(name):
                version = self._next_version(name)
                self._record_version(name, version)  # reserved durably before it can be seen
                target = model_dir / "versions" / version
                os.rename(staging, target)
                fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelVersion(name, version, target, metadata)

    def _next_version(self, name: str) -> str:
        """One past the highest number ever used, so a pruned number is never handed out again.

        Called under the lock. The max with what is on disk covers a counter
        written by an older version of this library, which could lag.
        """
        existing = self.versions(name)
        last = max(self._last_version(name), int(existing[-1]) if existing else 0)
        if last >= MAX_VERSION:
            raise RegistryError(
                f"model {name!r} has used every version number up to {MAX_VERSION:06d} "
                f"({str(self.root / name / COUNTER)!r}); publish under another name"
            )
        return f"{last + 1:06d}"

    def _last_version(self, name: str) -> int:
        """The counter: the highest number handed out (0 without one); an invalid one is refused by name."""
        path = _not_linked(self._model_dir(name) / COUNTER, RegistryError)
        if not path.exists():
            return 0
        data = read_json(path, RegistryError, MAX_STATE_BYTES, follow=False)
        if not isinstance(data, dict) or "last_version" not in data:
            raise RegistryError(f"{str(path)!r} is invalid: {excerpt(data)} is not {{\"last_version\": N}}; {_REPAIR}")
        last = data["last_version"]
        if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= MAX_VERSION:
            raise RegistryError(
                f"{str(path)!r} is invalid: last_version is {excerpt(last)}, not a whole number from 0 to "
                f"{MAX_VERSION}; set it to the highest version ever published"
            )
        return last

    def _record_version(self, name: str, version: str) -> None:
        atomic_write_json(self.root / name / COUNTER, {"last_version": int(version)})

    def _clean_leftovers(self, model_dir: Path) -> None:
        """Remove staging/trash folders whose writing process is gone (killed mid-write)."""
        for entry in model_dir.iterdir():
            if entry.name.startswith((_STAGING_PREFIX, _TRASH_PREFIX)) and not _owner_alive(entry.name):
                _remove(entry)

    # -- finding and loading -----------------------------------------------------

    def names(self) -> list[str]:
        """Model names that have at least one published version (or a folder too broken to tell)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _valid_name(p.name) and self._has_versions(p.name))

    def _has_versions(self, name: str) -> bool:
        try:
            return bool(self.versions(name))
        except RegistryError:  # a linked folder: listed, so that ``models list`` can say why it is broken
            return True

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (staging folders are never listed).

        A six-digit entry that is a symbolic link is listed too, so that it is
        seen and refused by name rather than silently skipped.
        """
        folder = self.versions_dir(name)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if _VERSION.fullmatch(p.name) and (p.is_dir() or p.is_symlink()))

    def _model_dir(self, name: str) -> Path:
        """``<root>/<name>``, refused when it is a symbolic link (it would lead out of the registry)."""
        return _not_linked(self.root / check_name(name), RegistryError)

    def versions_dir(self, name: str) -> Path:
        """``<root>/<name>/versions``, refused when it is a symbolic link."""
        return _not_linked(self._model_dir(name) / "versions", RegistryError)

    def resolve(self, name: str, version: str | int | None = None, alias: str | None = None) -> str:
        """The version meant: explicit ``version``, else ``alias``, else ``production``, else the latest."""
        available = self.require_versions(name)
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
        elif DEFAULT_ALIAS not in aliases:
            return available[-1]
        chosen = alias or DEFAULT_ALIAS
        if aliases[chosen] not in available:
            raise RegistryError(
                f"alias {chosen!r} of model {name!r} points to {aliases[chosen]}, which does not exist; "
                f"versions: {', '.join(available)}"
            )
        return aliases[chosen]

    def path(self, name: str, version: str | int | None = None, alias: str | None = None) -> Path:
        return self.versions_dir(name) / self.resolve(name, version, alias)

    def verify(self, name: str, version: str | int | None = None, alias: str | None = None) -> Path:
        """Check every file against the manifest; raise :class:`ModelFileError` naming the first that differs."""
        folder = self.path(name, version, alias)
        verify_manifest(folder)
        return folder

    def load(
        self,
        name: str,
        version: str | int | None = None,
        alias: str | None = None,
        *,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> LoadedModel:
        """The verified detector of a version (see :meth:`resolve` for which one), under the model's policy.

        The policy is the model's current policy record (:meth:`set_policy`),
        else the one the version was trained with; ``overrides`` (a
        deployment's ``{section: {setting: value}}``) change it further.
        """
        folder = self.verify(name, version, alias)
        detector = LSTMAutoencoderDetector.load(folder)
        record = self.policy(name)
        chosen = record.policy if record is not None else detector.policy
        if overrides:
            try:
                chosen = chosen.replace(**overrides)
            except ConfigError as exc:
                raise ConfigError(f"the policy overrides for model {name!r} are invalid: {exc}") from exc
        detector = detector.with_policy(chosen)
        meta = ModelVersion(name, folder.name, folder, _read_metadata(folder))
        return LoadedModel(meta, detector, record, bool(overrides))

    def get(self, name: str, version: str | int | None = None, alias: str | None = None) -> ModelVersion:
        """Metadata of a version, without loading the model (a linked folder or file is refused)."""
        folder = self.path(name, version, alias)
        _check_links(folder)
        return ModelVersion(name, folder.name, folder, _read_metadata(folder))

    def require_versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first; a model without any is a :class:`RegistryError`."""
        available = self.versions(name)
        if not available:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"no model named {name!r} in registry {str(self.root)!r}; models: {known}")
        return available

    # -- aliases -----------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` for ``name`` (empty when none are set).

        Each alias's trail in ``alias-history.json`` ends at its current
        version and wins over ``aliases.json``: the trail is written first, so
        after a crash between the two writes it is the one that is up to date.
        """
        return self._alias_state(name)[0]

    def promote(self, name: str, version: str | int, alias: str = DEFAULT_ALIAS) -> str:
        """Point ``alias`` at ``version``, remembering the previous target for :meth:`rollback`."""
        check_name(alias, "alias")
        with self._lock(name):
            target = self.resolve(name, version=version)
            current, history, stale = self._alias_state(name)
            if current.get(alias) != target:
                trail = history.setdefault(alias, [])
                if alias in current and (not trail or trail[-1] != current[alias]):
                    trail.append(current[alias])  # an alias set before trails were kept
                trail.append(target)
                current[alias] = target
                self._write_aliases(name, current, history)
            elif stale:  # aliases.json lags a change a crash interrupted: bring it up to date
                self._write_aliases(name, current, history)
        return target

    def rollback(self, name: str, alias: str = DEFAULT_ALIAS) -> str:
        """Point ``alias`` back at the version it pointed to before the last promotion."""
        check_name(alias, "alias")
        with self._lock(name):
            current, history, _ = self._alias_state(name)
            trail = history.get(alias, [])
            if alias not in current or len(trail) < 2:
                raise RegistryError(f"alias {alias!r} of model {name!r} has no earlier version to roll back to")
            previous = trail[-2]
            if previous not in self.versions(name):
                raise RegistryError(f"cannot roll {alias!r} of {name!r} back to {previous}: that version was pruned")
            trail.pop()
            current[alias] = previous
            self._write_aliases(name, current, history)
        return current[alias]

    def _alias_state(self, name: str) -> tuple[dict[str, str], dict[str, list[str]], bool]:
        """The current aliases, their trails, and whether ``aliases.json`` disagrees with them."""
        written, history = self._read_aliases(name), self._alias_history(name)
        current = {**written, **{alias: trail[-1] for alias, trail in history.items() if trail}}
        return current, history, current != written

    def _read_aliases(self, name: str) -> dict[str, str]:
        """``aliases.json`` as written, each name and version checked."""
        path = self._model_dir(name) / ALIASES
        data = _read_state(path)
        for alias, version in data.items():
            if not _is_version(version):
                raise RegistryError(
                    f"{str(path)!r} is invalid: alias {excerpt(alias)} points to {excerpt(version)}, "
                    f"not a six-digit version such as '000001'; {_REPAIR}"
                )
        return data

    def _alias_history(self, name: str) -> dict[str, list[str]]:
        """``alias-history.json``: each alias's versions, oldest first, the current one last."""
        path = self._model_dir(name) / ALIAS_HISTORY
        data = _read_state(path)
        for alias, trail in data.items():
            if not isinstance(trail, list) or not all(_is_version(v) for v in trail):
                raise RegistryError(
                    f"{str(path)!r} is invalid: alias {excerpt(alias)} has the history {excerpt(trail)}, "
                    f"not a list of six-digit versions; {_REPAIR}"
                )
        return {alias: list(trail) for alias, trail in data.items()}

    def _write_aliases(self, name: str, aliases: dict[str, str], history: dict[str, list[str]]) -> None:
        """The history commits the change; aliases.json follows it (see :meth:`aliases`)."""
        atomic_write_json(self.root / name / ALIAS_HISTORY, history)
        atomic_write_json(self.root / name / ALIASES, aliases)

    # -- policy ------------------------------------------------------------------

    def policy(self, name: str) -> PolicyRecord | None:
        """The model's current policy record, or None when none was set (its versions score as trained)."""
        current, records, _ = self._policy_state(name)
        return records.get(current) if current is not None else None

    def policy_history(self, name: str) -> list[PolicyRecord]:
        """Every policy record of the model, oldest first."""
        return sorted(self._policy_state(name)[1].values(), key=lambda r: r.id)

    def set_policy(self, name: str, policy: Policy, note: str = "") -> PolicyRecord:
        """Record ``policy`` as the model's next policy version and make it current; no retraining.

        It takes effect on the next score run of any version of the model.
        """
        self.require_versions(name)
        with self._lock(name):
            current, records, trail = self._policy_state(name)
            record = PolicyRecord(max(records, default=0) + 1, policy, datetime.now(timezone.utc).isoformat(), note)
            records[record.id] = record
            self._write_policy(name, record.id, records, [*trail, record.id])
        return record

    def rollback_policy(self, name: str) -> PolicyRecord | None:
        """Make the policy before the current one current again (None: back to each version's own)."""
        with self._lock(name):
            current, records, trail = self._policy_state(name)
            if current is None:
                raise RegistryError(f"model {name!r} has no policy to roll back")
            trail = trail[:-1]
            previous = trail[-1] if trail else None
            self._write_policy(name, previous, records, trail)
        return records.get(previous) if previous is not None else None

    def _policy_state(self, name: str) -> tuple[int | None, dict[int, PolicyRecord], list[int]]:
        """``policy.json``: the current record's id, every record, and the trail of ids made current."""
        path = _not_linked(self._model_dir(name) / POLICY, RegistryError)
        if not path.exists():
            return None, {}, []
        where = f"{str(path)!r}"
        data = read_json(path, RegistryError, MAX_STATE_BYTES, follow=False)
        if not isinstance(data, dict):
            raise RegistryError(f"{where} is invalid: {excerpt(data)} is not a policy record; {_REPAIR}")
        data = upgrade("policy", data, data.get("format_version"), where)
        try:
            records = {int(r["id"]): PolicyRecord(int(r["id"]), Policy.from_dict(r["policy"]), str(r["created_at"]), str(r.get("note", ""))) for r in data["records"]}
            trail = [int(i) for i in data["trail"]]
            current = data["current"]
        except (KeyError, TypeError, ValueError, AnomalyError) as exc:
            raise RegistryError(f"{where} is invalid: {excerpt(str(exc))}; {_REPAIR}") from exc
        if current is not None and current not in records or any(i not in records for i in trail):
            raise RegistryError(f"{where} is invalid: it names a policy record it does not hold; {_REPAIR}")
        return current, records, trail

    def _write_policy(self, name: str, current: int | None, records: dict[int, PolicyRecord], trail: list[int]) -> None:
        data = {
            "format_version": POLICY_FORMAT,
            "current": current,
            "trail": trail,
            "records": [records[i].to_json() for i in sorted(records)],
        }
        atomic_write_json(self.root / name / POLICY, data)

    # -- retention ---------------------------------------------------------------

    def prune(self, name: str, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` versions, sparing every aliased one; returns what went."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise RegistryError(f"keep must be an integer >= 0, got {keep!r}")
        removed: list[str] = []
        with self._lock(name):
            available = self.require_versions(name)
            protected = set(self.aliases(name).values())
            if int(available[-1]) > self._last_version(name):  # a counter an older library let lag
                self._record_version(name, available[-1])
            candidates = available[: max(len(available) - keep, 0)]
            for version in candidates:
                if version in protected:
                    continue
                trash = self.root / name / f"{_TRASH_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                os.rename(self.root / name / "versions" / version, trash)  # vanishes whole
                _remove(trash)
                removed.append(version)
        return removed

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Hold the model's lock; temporaries of alias and counter writers killed mid-write are removed first.

        Every writer of those files holds this lock, so any temporary found
        while holding it belongs to a writer that is gone.
        """
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / LOCK), timeout=LOCK_TIMEOUT_S):
            for state in _STATE_FILES:
                for leftover in folder.glob(f".{state}.*"):
                    if leftover.is_file() or leftover.is_symlink():
                        leftover.unlink(missing_ok=True)
            yield


# -- tables for people ------------------------------------------------------------


def models_table(registry: ModelRegistry) -> "pd.DataFrame":
    """One row per model: versions, latest, aliases, and which versions are broken (a broken model is a row too)."""
    import pandas as pd

    rows = []
    for name in registry.names():
        try:
            rows.append(_model_row(registry, name))
        except AnomalyError as exc:
            base = registry.root
            rows.append({"model": name, "versions": "?", "latest": "?", "created": "?", "aliases": "?",
                         "status": f"broken: {_relative(exc, base)}"})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "versions", "latest", "created", "aliases", "status"])


def _model_row(registry: ModelRegistry, name: str) -> dict[str, Any]:
    versions = registry.versions(name)
    aliases = registry.aliases(name)
    folder = registry.root / name / "versions"
    broken = [v for v in versions if version_problem(folder / v) is not None]
    created = "?" if versions[-1] in broken else _short_time(_read_metadata(folder / versions[-1]).get("created_at"))
    return {
        "model": name,
        "versions": len(versions),
        "latest": versions[-1],
        "created": created,
        "aliases": ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-",
        "status": f"broken: {', '.join(broken)}" if broken else "ok",
    }


def versions_table(registry: ModelRegistry, name: str) -> "pd.DataFrame":
    """One row per version of ``name``, newest first: what a reviewer needs to pick one.

    A version that cannot be loaded (no manifest, a file missing, a symbolic
    link) is a row saying why, so one broken folder hides nothing else.
    """
    import pandas as pd

    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases(name).items():
        by_version.setdefault(version, []).append(alias)
    folder = registry.versions_dir(name)
    rows = []
    for version in reversed(registry.require_versions(name)):
        problem = version_problem(folder / version)
        row = _version_row(folder / version) if problem is None else None
        if row is None:
            why = problem or "metadata.json does not say what a version holds"
            row = {"created": "?", "data": "?", "metrics": "?", "threshold": "?", "val_loss": "?", "epochs": "?",
                   "status": f"broken: {why.replace(str(folder) + os.sep, '')}"}  # fmt: skip
        rows.append({"version": version, **row, "aliases": ", ".join(sorted(by_version.get(version, []))) or "-"})
    return pd.DataFrame(rows)


def _version_row(folder: Path) -> dict[str, Any] | None:
    """A version's metadata as table cells; None when the metadata is not what a version writes."""
    meta = _read_metadata(folder)
    try:
        data = meta.get("data", {})
        return {
            "created": _short_time(meta.get("created_at")),
            "data": f"{_short_time(data.get('start'))} .. {_short_time(data.get('end'))} ({data.get('rows', '?')} rows)",
            "metrics": ",".join(meta.get("metrics", [])),
            "threshold": f"{meta['threshold']['method']} {meta['threshold']['combined']:.4g}",
            "val_loss": _fmt(meta.get("training", {}).get("best_val_loss")),
            "epochs": meta.get("training", {}).get("epochs_run", "?"),
            "status": "ok",
        }
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def version_problem(folder: Path) -> str | None:
    """Why a version folder cannot be loaded, without hashing its files; None when it looks whole."""
    try:
        verify_manifest(folder, hashes=False)
        _read_metadata(folder)
    except ModelFileError as exc:
        return str(exc)
    return None


def _relative(exc: Exception, base: Path) -> str:
    return str(exc).replace(str(base) + os.sep, "")


def _short_time(text: object) -> str:
    """``2026-01-05 00:00`` from an ISO time; ``?`` for anything else (metadata is shown, never trusted)."""
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M") if isinstance(text, str) else "?"
    except ValueError:
        return "?"


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


def verify_manifest(folder: Path, *, hashes: bool = True) -> None:
    """Raise :class:`ModelFileError` naming the first linked, unlisted, missing, changed or truncated file.

    Every file loading reads (the model files of its format and the metadata) must be listed; sizes
    are compared before any file is hashed (``hashes=False`` skips hashing,
    for listings).
    """
    _check_links(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"version folder {str(folder)!r} has no {MANIFEST}: it is incomplete or not a registry version")
    manifest = read_json(path, ModelFileError, MAX_MANIFEST_BYTES, follow=False)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(_valid_entry(e) for e in files.values()):
        raise ModelFileError(f"{str(path)!r} is not a valid manifest: expected files with sha256 and size")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(folder)!r} was written in registry format {version!r}, newer than this version of the "
            f"library understands ({FORMAT_VERSION}); upgrade the anomaly package"
        )
    unlisted = [name for name in (*required_files(version), METADATA) if name not in files]
    if unlisted:
        raise ModelFileError(f"{str(path)!r} does not list {unlisted[0]!r}: every model file must be verified")
    for name, expected in sorted(files.items()):
        if not _valid_name(name):
            raise ModelFileError(f"{str(path)!r} lists an invalid file name {excerpt(name)}")
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{str(file)!r} is missing (listed in {MANIFEST})")
        size = file.stat().st_size
        if size != expected["size"]:
            raise ModelFileError(f"{str(file)!r} has {size} bytes, the manifest says {expected['size']}: truncated or replaced")
        if hashes and sha256_file(file) != expected["sha256"]:
            raise ModelFileError(f"{str(file)!r} does not match its sha256 in {MANIFEST}: it was changed")


def _valid_entry(entry: object) -> bool:
    """A manifest entry: a sha256 in hex and a size no version file exceeds (so hashing is bounded)."""
    if not isinstance(entry, dict):
        return False
    digest, size = entry.get("sha256"), entry.get("size")
    return (
        isinstance(digest, str)
        and bool(_SHA256.fullmatch(digest))
        and isinstance(size, int)
        and not isinstance(size, bool)
        and 0 <= size <= MAX_VERSION_FILE_BYTES
    )


def _check_links(folder: Path) -> None:
    """Refuse a version folder that is a symbolic link or holds one: nothing is read from outside the registry."""
    _not_linked(folder, ModelFileError)
    if folder.is_dir():
        for entry in folder.iterdir():
            _not_linked(entry, ModelFileError)


def _not_linked(path: Path, error: type[AnomalyError]) -> Path:
    if path.is_symlink():
        raise error(f"{str(path)!r} is a symbolic link, which the registry never follows")
    return path


def _read_metadata(folder: Path) -> dict[str, Any]:
    data = read_json(folder / METADATA, ModelFileError, MAX_JSON_BYTES, follow=False)
    if not isinstance(data, dict):
        raise ModelFileError(f"{str(folder / METADATA)!r} is not a JSON object: {excerpt(data)}")
    return data


def _read_state(path: Path) -> dict[str, Any]:
    """``aliases.json`` or ``alias-history.json``: a mapping from alias names ({} when absent)."""
    if not _not_linked(path, RegistryError).exists():
        return {}
    data = read_json(path, RegistryError, MAX_STATE_BYTES, follow=False)
    if not isinstance(data, dict):
        raise RegistryError(f"{str(path)!r} is invalid: {excerpt(data)} is not a mapping of alias names; {_REPAIR}")
    for alias in data:
        if not _valid_name(alias):
            raise RegistryError(f"{str(path)!r} is invalid: {excerpt(alias)} is not a valid alias name; {_REPAIR}")
    return data


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a link (the link itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# -- helpers ---------------------------------------------------------------------


def _metadata(
    detector: "LSTMAutoencoderDetector",
    name: str,
    run_id: str | None,
    evaluation: Mapping[str, Any] | None,
    parent: str | None,
) -> dict[str, Any]:
    """Who, when and what: everything a person needs to judge a version without loading it."""
    cfg = detector.get_config()
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
            "per_metric": {m: t.threshold_ for m, t in detector.thresholds_.per_metric.items()},
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
    """The loss curve as a PNG, drawn off-screen, one figure at a time (see :mod:`anomaly.ops.plotting`)."""
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


