"""The series catalogue: each stored series' metric name and label set.

A series is a name plus a label set (``demo_cpu{job="api", instance="a"}``).
The raw store keeps its points under one flattened *store name*, the
series' stable id everywhere (store folders, groups, models, scores,
events): :func:`series_key` forms it, ``demo_cpu.instance_a.job_api``. The
catalogue keeps what the flattening loses, beside the store::

    <store>/series.json  {"format_version": 1,
                          "series": {"demo_cpu.instance_a.job_api":
                                     {"name": "demo_cpu", "labels": {"instance": "a", "job": "api"}}}}

Sources with label sets (Prometheus; SQL with ``label_columns``) record the
series each ingest returned (:meth:`anomaly.io.store.RawStore.record_series`,
under the store's lock, written atomically, merged: a series ingested again
with other labels takes the new ones, with a warning). A store name the
catalogue does not hold is a series named by it with no labels: files, and
every store written before the catalogue existed, need nothing rewritten.

Outputs add a series' labels to their own (:func:`output_labels`): a source
label that has one of their names is kept as ``exported_<name>`` (as
Prometheus itself does on a scrape) and ``__``-prefixed labels are dropped,
so a source label can never clobber ``metric``, ``model`` or ``version``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.core.migrations import CURRENT, FormatError, upgrade
from anomaly.errors import DataError, excerpt

CATALOGUE = "series.json"
#: A catalogue larger than this is refused rather than read (about 200,000 series).
MAX_CATALOGUE_BYTES = 64 << 20
MAX_KEY_LENGTH = 200
HASH_DIGITS = 8
#: What a source label is renamed to when an output already has a label of its name.
EXPORTED_PREFIX = "exported_"
#: A label selector's key that matches the series' metric name, as in PromQL.
NAME_LABEL = "__name__"
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE_VALUE_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_UNSAFE_BASE_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")  # Prometheus names and query names have no dots; SQL names may


@dataclass(frozen=True)
class Series:
    """One stored series: its store name (``key``), metric name and labels (without ``__name__``)."""

    key: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(sorted(self.labels.items()))}

    def matches(self, selector: Mapping[str, str]) -> bool:
        """Whether every label of ``selector`` has its value here (``__name__`` is the metric name)."""
        return all((self.name if k == NAME_LABEL else self.labels.get(k)) == v for k, v in selector.items())


def series_key(labels: Mapping[str, str], name: str | None = None) -> str:
    """The store's name for one series: ``<base>.<label>_<value>...``, sorted by label name.

    The base is ``name`` or else ``labels["__name__"]``; characters of a
    value other than letters, digits, ``_`` and ``-`` become ``_``. A key
    longer than 200 characters is cut and ends in ``-`` plus 8 hex digits
    of a hash of the whole label set, so keys stay distinct. Callers check
    the result as a store name (:func:`anomaly.io.store.check_metric_name`).
    """
    base = name if name is not None else labels.get(NAME_LABEL, "")
    if not base:
        raise DataError(f"series {show_labels(labels)} has no metric name to form a key from")
    parts = [_UNSAFE_BASE_CHAR.sub("_", base)]
    parts += [
        f"{_UNSAFE_VALUE_CHAR.sub('_', k)}_{_UNSAFE_VALUE_CHAR.sub('_', v)}" for k, v in sorted(labels.items()) if k != NAME_LABEL
    ]
    key = ".".join(parts)
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(json.dumps([base, sorted(labels.items())]).encode()).hexdigest()[:HASH_DIGITS]
        key = f"{key[: MAX_KEY_LENGTH - HASH_DIGITS - 1]}-{digest}"
    return key


def show_labels(labels: Mapping[str, str]) -> str:
    """Labels as PromQL writes them, for messages: ``name{a='1', b='2'}``."""
    rest = ", ".join(f"{k}={excerpt(v)}" for k, v in sorted(labels.items()) if k != NAME_LABEL)
    return f"{labels.get(NAME_LABEL, '')}{{{rest}}}"


def check_label_name(name: object, what: str) -> str:
    """A label name Prometheus and Alertmanager accept, not reserved (``__...``); else a one-line error."""
    if not isinstance(name, str) or not LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise DataError(f"{what} {excerpt(name)} is not a label name: use letters, digits and '_', not starting with a digit or '__'")
    return name


# -- the file ------------------------------------------------------------------------------


def read_catalogue(path: Path) -> dict[str, Series]:
    """The catalogue at ``path``; none is empty. A damaged one is a one-line :class:`DataError` naming it and why."""
    if not path.exists():
        return {}
    where = excerpt(str(path), 300)
    data = read_json(path, DataError, MAX_CATALOGUE_BYTES, follow=False)
    try:
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not an object")
        data = upgrade("series", data, data.get("format_version"), where)
        entries = data.get("series")
        if not isinstance(entries, dict):
            raise ValueError(f"'series' is {excerpt(entries)}, not an object")
        return {str(key): _entry(key, value) for key, value in entries.items()}
    except FormatError as exc:
        raise DataError(str(exc)) from None
    except ValueError as exc:
        raise DataError(f"{where} is not a series catalogue: {exc}; fix it or move it aside (the next ingests record the series they return)") from None


def _entry(key: object, value: object) -> Series:
    """One catalogue entry; anything but ``{"name": str, "labels": {str: str}}`` is a ValueError naming the key."""
    if not (isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]):
        raise ValueError(f"series {excerpt(key)} has no name: {excerpt(value)}")
    labels = value.get("labels", {})
    if not (isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
        raise ValueError(f"the labels of series {excerpt(key)} are not a mapping of strings: {excerpt(labels)}")
    return Series(str(key), value["name"], dict(labels))


def write_catalogue(path: Path, catalogue: Mapping[str, Series]) -> None:
    """The whole catalogue, atomically: a reader sees the previous file or this one."""
    document = {"format_version": CURRENT["series"], "series": {k: catalogue[k].to_json() for k in sorted(catalogue)}}
    atomic_write_json(path, document)


def merge(catalogue: Mapping[str, Series], found: Iterable[Series]) -> tuple[dict[str, Series], list[tuple[Series, Series]]]:
    """The catalogue with ``found`` added or replacing entries of the same key; and the ``(old, new)`` that changed."""
    merged = dict(catalogue)
    changed = []
    for series in found:
        old = merged.get(series.key)
        if old is not None and old != series:
            changed.append((old, series))
        merged[series.key] = series
    return merged, changed


def series_of(catalogue: Mapping[str, Series], key: str) -> Series:
    """The series stored as ``key``: its catalogue entry, else named ``key`` with no labels."""
    return catalogue.get(key) or Series(key, key, {})


def common_labels(catalogue: Mapping[str, Series], keys: Sequence[str]) -> dict[str, str]:
    """The labels every series of ``keys`` has with the same value (all of one series' labels)."""
    sets = [dict(series_of(catalogue, k).labels) for k in keys]
    if not sets:
        return {}
    first, rest = sets[0], sets[1:]
    return {k: v for k, v in sorted(first.items()) if all(s.get(k) == v for s in rest)}


def output_labels(own: Mapping[str, str], source: Mapping[str, str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """``own`` labels with a series' ``source`` labels added, never overwritten.

    A source label named like one of ``own`` or ``reserved`` becomes
    ``exported_<name>`` (prefixed again while that is taken too);
    ``__``-prefixed labels are dropped.
    """
    blocked = set(own) | set(reserved)
    out = {k: v for k, v in sorted(source.items()) if not k.startswith("__") and k not in blocked}
    for k, v in sorted(source.items()):
        if k.startswith("__") or k not in blocked:
            continue
        name = EXPORTED_PREFIX + k
        while name in blocked or name in out or name in source:
            name = EXPORTED_PREFIX + name
        out[name] = v
    return {**out, **own}


def check_selector(selector: object, what: str) -> dict[str, str]:
    """A label selector ``{label: value, ...}``: a non-empty mapping of label names to strings; else a one-line error."""
    if not (isinstance(selector, Mapping) and selector and all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())):
        raise DataError(f"{what} must be a non-empty mapping of label names to string values, got {excerpt(selector, 200)}")
    for name in selector:
        if name != NAME_LABEL:
            check_label_name(name, f"{what}: label")
    return dict(selector)


__all__ = [
    "CATALOGUE", "Series", "check_label_name", "check_selector", "common_labels", "merge", "output_labels",
    "read_catalogue", "series_key", "series_of", "show_labels", "write_catalogue",
]  # fmt: skip
