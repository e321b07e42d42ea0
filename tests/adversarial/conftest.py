"""Harness for hostile-input tests: bounded child processes and byte-level snapshots.

Every hostile case that could allocate without bound or hang runs in a child
process with an address-space limit and a wall-clock timeout, so a regression
fails fast with a clear message instead of exhausting CI's memory or time.
``snapshot`` records every file under a folder by content, so a test can
assert that a refused input left what was stored before byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Address space a child may use: imports of torch and pandas take about 0.9 GB of it.
DEFAULT_MEMORY_MB = 2048
DEFAULT_TIMEOUT_S = 60.0
CHILD_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": str(REPO),
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class Outcome:
    """What a bounded child did: exit status and its two streams."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """The non-empty lines of stderr, without Python's warnings machinery."""
        return [line for line in self.stderr.splitlines() if line.strip() and "Warning" not in line]


def _limits(memory_mb: int) -> None:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_bounded(
    argv: list[str],
    *,
    memory_mb: int = DEFAULT_MEMORY_MB,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> Outcome:
    """Run ``python *argv`` under a memory cap and a timeout; a timeout fails the test by name."""
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd or REPO,
            env={**CHILD_ENV, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=lambda: _limits(memory_mb),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child did not finish within {timeout_s:.0f} s: {argv!r}\n{exc.stderr or ''}")
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def run_cli(args: list[str], **kwargs: object) -> Outcome:
    """The ``anomaly`` command in a bounded child (``python -m anomaly.cli ARGS``)."""
    return run_bounded(["-m", "anomaly.cli", *args], **kwargs)  # type: ignore[arg-type]


def run_python(code: str, *args: str, **kwargs: object) -> Outcome:
    """A snippet of Python in a bounded child, with ``sys.argv[1:] == args``."""
    return run_bounded(["-c", code, *args], **kwargs)  # type: ignore[arg-type]


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (symlinks by their target text)."""
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_one_line_error(outcome: Outcome, *fragments: str, returncode: int = 2) -> str:
    """The CLI's contract for bad input: the exit status, one ``error:`` line naming each fragment."""
    assert outcome.returncode == returncode, (outcome.returncode, outcome.stderr[-2000:])
    lines = [line for line in outcome.error_lines if line.startswith("error:")]
    assert len(lines) == 1, outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert "unexpected" not in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
