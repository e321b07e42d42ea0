"""The workspace folder: every path and file name the scheduled work keeps, in one place.

Layout (``data/`` by default)::

    store/                                  raw points (:class:`anomaly.io.store.RawStore`)
    scores/<group>/part-<after>-<token>.parquet    per-point scores of one score run
    scores/<group>/carry-<after>-<token>.parquet   what the next run continues the scoring from
    scores/<group>/state.json                the last scored point, version, policy, open alert run
    scores/<group>/latest.json               each metric's latest scored point, for the Prometheus exporter
    events/<group>/part-<after>-<token>.parquet    the alert rows one score run touched
    runs/score-<time>-<token>.json           what each score run did, group by group
    reports/report-<time>.{md,html,json}     one alert report per report run
    reports/state.json                       the report ledger (alerts' states, webhook outbox)
    reports/alertmanager.json                what was sent to Alertmanager (labels, startsAt, pending resolutions)
    reports/marks.json                       people's marks on alerts, every record kept (:mod:`anomaly.ops.marks`)

``<after>`` is the last point scored before the run (``%Y%m%dT%H%M%S%f``):
a part holds the points after it up to the next part's. Nothing outside
this module builds these paths.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anomaly.core.events import ALERT_COLUMNS, OpenRun, TrackerState
from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.core.migrations import CURRENT, upgrade
from anomaly.errors import DataError
from anomaly.io.store import RawStore

log = logging.getLogger(__name__)

WORKSPACE_ENV, DEFAULT_WORKSPACE = "ANOMALY_WORKSPACE", "data"
STORE, SCORES, EVENTS, REPORTS, RUNS, STATE = "store", "scores", "events", "reports", "runs", "state.json"
LATEST, ALERTMANAGER_STATE, MARKS = "latest.json", "alertmanager.json", "marks.json"
PART, CARRY = "part", "carry"
_STAMP = "%Y%m%dT%H%M%S%f"
_RUN_STAMP = "%Y%m%dT%H%M%S%fZ"
#: Parquet metadata key holding an alert part's format version.
_FORMAT_KEY = b"anomaly.format_version"


@dataclass(frozen=True)
class ScoreState:
    """Where one group's scoring stands: the commit point of its score runs."""

    last_scored: pd.Timestamp
    version: str
    policy: str | None  # the policy it scored under (``p<id>`` or ``trained``)
    carry: str | None  # the carry file's name
    carry_key: str | None  # what the carry is valid for (model version and scoring)
    step_s: float
    sustained: int
    tracker: TrackerState  # the open alert run and the metric's last point outside its range

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": CURRENT["score_state"],
            "last_scored": self.last_scored.isoformat(),
            "version": self.version,
            "policy": self.policy,
            "carry": self.carry,
            "carry_key": self.carry_key,
            "step_s": self.step_s,
            "sustained": self.sustained,
            "open_run": None if self.tracker.run is None else self.tracker.run.to_json(),
            "last_outside": None if self.tracker.last_outside is None else self.tracker.last_outside.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> "ScoreState":
        data = upgrade("score_state", dict(data), data.get("format_version", 1), where)
        try:
            run, outside = data.get("open_run"), data.get("last_outside")
            return cls(
                pd.Timestamp(data["last_scored"]),
                str(data["version"]),
                data.get("policy"),
                data.get("carry"),
                data.get("carry_key"),
                float(data.get("step_s", 0.0)),
                int(data.get("sustained", 0)),
                TrackerState(None if run is None else OpenRun.from_json(run), None if outside is None else pd.Timestamp(outside)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where} is not a score state: {exc}") from exc


@dataclass(frozen=True)
class PartFiles:
    """The files one score run of one group wrote."""

    scores: Path
    alerts: Path | None
    carry: Path | None


class Workspace:
    """A workspace folder and everything in it (see the module's docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @classmethod
    def resolve(cls, root: str | Path | None = None) -> "Workspace":
        """The argument, else ``$ANOMALY_WORKSPACE``, else ``data``."""
        return cls(root or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)

    # -- the raw store ---------------------------------------------------------------------

    @property
    def store_root(self) -> Path:
        return self.root / STORE

    def store(self) -> RawStore:
        return RawStore(self.store_root)

    # -- a group's scoring -----------------------------------------------------------------

    def scores_dir(self, group: str) -> Path:
        return self.root / SCORES / group

    def events_root(self) -> Path:
        return self.root / EVENTS

    def score_state(self, group: str) -> ScoreState | None:
        """The group's score state, or None before its first score run."""
        path = self.scores_dir(group) / STATE
        if not path.exists():
            return None
        data = read_json(path, DataError)
        if not isinstance(data, dict):
            raise DataError(f"{str(path)!r} is not a score state: it holds a {type(data).__name__}")
        return ScoreState.from_json(data, repr(str(path)))

    def write_score_state(self, group: str, state: ScoreState) -> None:
        """Move the group's scoring forward: the commit point of a score run."""
        atomic_write_json(self.scores_dir(group) / STATE, state.to_json())

    def latest_path(self, group: str) -> Path:
        """Where the group's latest scored point per metric is kept (see :mod:`anomaly.ops.latest`)."""
        return self.scores_dir(group) / LATEST

    def latest_paths(self) -> list[Path]:
        """Every group's latest-point file, in a stable order."""
        return sorted((self.root / SCORES).glob(f"*/{LATEST}"))

    def write_parts(
        self, group: str, after: pd.Timestamp, scores: pd.DataFrame, alerts: pd.DataFrame, carry: pd.DataFrame | None
    ) -> PartFiles:
        """A score run's scores, alert rows and carry, named after the state they continue from.

        Parts already named so were left by a run that crashed before moving
        the state: they are replaced, not added to.
        """
        prefix = after.strftime(_STAMP)
        for folder in (self.scores_dir(group), self.events_root() / group):
            for orphan in folder.glob(f"{PART}-{prefix}-*.parquet"):
                orphan.unlink()
        stamp = f"{prefix}-{uuid.uuid4().hex[:8]}"
        scores_file = _write_parquet(scores, self.scores_dir(group) / f"{PART}-{stamp}.parquet")
        alerts_file = None
        if len(alerts):
            alerts_file = _write_parquet(alerts, self.events_root() / group / f"{PART}-{stamp}.parquet", CURRENT["alerts"])
        carry_file = None
        if carry is not None:
            carry_file = _write_parquet(carry.rename_axis("timestamp").reset_index(), self.scores_dir(group) / f"{CARRY}-{stamp}.parquet")
        return PartFiles(scores_file, alerts_file, carry_file)

    def read_carry(self, group: str, state: ScoreState | None, key: str, columns: Sequence[str]) -> pd.DataFrame | None:
        """The carry the group's last run left, if it was made for ``key``; None otherwise (score the context again).

        A damaged or foreign carry costs one slower run, never the group's
        scoring: it is skipped with a warning.
        """
        if state is None or not state.carry or state.carry_key != key:
            return None
        path = self.scores_dir(group) / state.carry
        if not path.is_file():
            return None
        try:
            carry = pd.read_parquet(path).set_index("timestamp")
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            log.warning("carry %s is unreadable (%s); scoring from the full context", path, exc)
            return None
        if list(carry.columns) != list(columns) or carry.empty:
            log.warning("carry %s has columns %s, not %s; scoring from the full context", path, list(carry.columns), list(columns))
            return None
        return carry

    def remove_stale_carries(self, group: str, keep: Path | None) -> None:
        """Carries the state no longer names (this run's predecessor, a crashed run's)."""
        for stale in self.scores_dir(group).glob(f"{CARRY}-*.parquet"):
            if keep is None or stale.name != keep.name:
                stale.unlink()

    def read_scores(self, group: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """The group's scores between ``start`` and ``end``, reading only the parts that cover them."""
        parts = sorted(self.scores_dir(group).glob(f"{PART}-*.parquet"))
        times = [_part_time(p) for p in parts]
        chosen = [p for i, p in enumerate(parts) if times[i] < end and (i + 1 == len(parts) or times[i + 1] >= start)]
        if not chosen:
            return pd.DataFrame()
        frame = pd.concat([pd.read_parquet(p) for p in chosen], ignore_index=True)
        frame = frame.drop_duplicates("timestamp", keep="last").set_index("timestamp").sort_index()
        return frame.loc[start:end]

    # -- alert rows ------------------------------------------------------------------------

    def alert_parts(self) -> list[str]:
        """Every group's alert parts, relative to the workspace, in a stable order."""
        root = self.events_root()
        return sorted(str(p.relative_to(self.root)) for p in root.glob(f"*/{PART}-*.parquet"))

    def read_alert_rows(self, parts: Sequence[str]) -> pd.DataFrame:
        """The alert rows of ``parts`` (relative paths), each brought to today's format."""
        frames = []
        for rel in parts:
            path = self.root / rel
            version = _parquet_version(path)
            frame = upgrade("alerts", pd.read_parquet(path), version, repr(str(path)))
            if len(frame):
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(ALERT_COLUMNS))

    def alerts(self) -> pd.DataFrame:
        """Every alert the score runs raised, each as its latest row says (one row per alert id)."""
        rows = self.read_alert_rows(self.alert_parts())
        return rows.drop_duplicates("id", keep="last").sort_values(["start", "model"], kind="stable").reset_index(drop=True)

    # -- score run records -----------------------------------------------------------------

    def record_run(self, results: Sequence[Mapping[str, Any]], now: datetime | None = None) -> Path:
        """Keep what a score run did in ``runs/`` for the next report (scores and events are committed before)."""
        moment = now or datetime.now(timezone.utc)
        folder = self.root / RUNS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"score-{moment.strftime(_RUN_STAMP)}-{uuid.uuid4().hex[:8]}.json"
        atomic_write_json(path, {"at": moment.isoformat(), "results": [dict(r) for r in results]})
        return path

    def run_records(self) -> list[str]:
        """Names of the score run records, oldest first."""
        return sorted(p.name for p in (self.root / RUNS).glob("score-*.json"))

    def run_record_path(self, name: str) -> Path:
        return self.root / RUNS / name

    @staticmethod
    def run_time(name: str) -> pd.Timestamp:
        return pd.Timestamp(datetime.strptime(name.split("-")[1], _RUN_STAMP), tz="UTC")

    # -- reports ---------------------------------------------------------------------------

    @property
    def reports_dir(self) -> Path:
        return self.root / REPORTS

    @property
    def ledger_path(self) -> Path:
        return self.reports_dir / STATE

    @property
    def alertmanager_state_path(self) -> Path:
        """The Alertmanager sender's state, beside the ledger (see :mod:`anomaly.ops.alertmanager`)."""
        return self.reports_dir / ALERTMANAGER_STATE

    @property
    def marks_path(self) -> Path:
        """People's marks on alerts (see :mod:`anomaly.ops.marks`), beside the ledger."""
        return self.reports_dir / MARKS

    @property
    def marks_lock_path(self) -> Path:
        return self.reports_dir / ".marks.lock"

    @property
    def report_lock_path(self) -> Path:
        return self.reports_dir / ".report.lock"

    def report_paths(self, moment: pd.Timestamp) -> dict[str, Path]:
        """The three files of the report made at ``moment``."""
        name = f"report-{moment.strftime(_RUN_STAMP)}"
        return {kind: self.reports_dir / f"{name}.{ext}" for kind, ext in (("json", "json"), ("markdown", "md"), ("html", "html"))}

    def reports(self) -> list[tuple[Path, pd.Timestamp]]:
        """Report files with the time they were made; files of other names are not ours and left out."""
        out = []
        for path in self.reports_dir.glob("report-*.*"):
            try:
                out.append((path, pd.Timestamp(datetime.strptime(path.name.split("-")[1].split(".")[0], _RUN_STAMP), tz="UTC")))
            except ValueError:
                continue
        return out


def _part_time(path: Path) -> pd.Timestamp:
    """The ``<after>`` time a part is named for."""
    return pd.Timestamp(datetime.strptime(path.name.split("-")[1], _STAMP), tz="UTC")


def _write_parquet(frame: pd.DataFrame, final: Path, version: int | None = None) -> Path:
    """One Parquet file written beside its final name, then renamed: readers never see half a file."""
    final.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if version is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _FORMAT_KEY: str(version).encode()})
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


def _parquet_version(path: Path) -> int:
    """The format version an alert part was written in (parts of release 0.1.0 carry none: 1)."""
    meta = pq.read_schema(path).metadata or {}
    return int(meta.get(_FORMAT_KEY, b"1"))
