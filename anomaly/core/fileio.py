"""Small, careful file operations shared by the model folder, the registry and the store.

Everything the product keeps on disk is JSON or Parquet written so that a
crash never leaves a half-written file where a good one was: write beside,
fsync, then ``os.replace``. Writers name their temporary folders with their
pid so a later writer can tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Plain JSON (no NaN/inf) into a file that nobody else can see yet (e.g. in a staging folder)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write beside ``path``, fsync, then ``os.replace``: readers see the old or the new file, never half."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_json` for any text (CSV, Markdown)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared folder's state from its readers
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path, error: type[Exception], max_bytes: int | None = None, *, follow: bool = True) -> Any:
    """Parsed JSON; an unreadable, invalid or (past ``max_bytes``) oversized file raises ``error`` naming it.

    The size is checked on the open file before reading, so a huge file costs
    no memory; with ``follow=False`` a symbolic link is refused, not read.
    Nesting too deep for the parser and integers too long to convert are
    reported like any other invalid JSON.
    """
    try:
        with open(path, "rb", opener=None if follow else _open_no_follow) as handle:
            size = os.fstat(handle.fileno()).st_size
            text = None if max_bytes is not None and size > max_bytes else handle.read()
            data = None if text is None else json.loads(text.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 decoding
        raise error(f"cannot read {str(path)!r}: {_reason(exc)}") from exc
    if text is None:
        raise error(f"cannot read {str(path)!r}: it is {size:,} bytes, more than the {max_bytes:,} allowed")
    return data


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _reason(exc: BaseException) -> str:
    """An exception in a few words: the OS's own message, or the first line of the parser's."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_tree(folder: Path) -> None:
    """Flush every file of a (flat) folder and the folder itself to disk before it is published."""
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
