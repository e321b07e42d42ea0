"""Real Prometheus, Pushgateway and Alertmanager servers on loopback ports, started and stopped by tests.

Each comes from its Debian package (``.ci/run`` installs them where missing);
a missing binary fails the test with the install command, never skips it.
Every server gets its own folder (configuration, storage, log) and a free
port, and is stopped when the ``with`` block ends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

PACKAGES = {"prometheus": "prometheus", "prometheus-pushgateway": "prometheus-pushgateway", "prometheus-alertmanager": "prometheus-alertmanager"}


def binary(name: str) -> str:
    """The path of ``name``; its absence fails with the command that installs it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found on PATH: install the Debian package: sudo apt-get install -y {PACKAGES[name]}", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(command: list[str], ready: str, log_path: Path, what: str, timeout_s: float = 30) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command``, wait until ``ready`` answers 200, yield the process; stop it (and fail with its log) at the end."""
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"{what} exited ({process.returncode}):\n{log_path.read_text()[-3000:]}", pytrace=False)
            try:
                if httpx.get(ready, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not ready at {ready} after {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.05)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server the test started, killing it if it will not stop within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def prometheus(folder: Path, scrape_configs: str) -> Iterator[str]:
    """A Prometheus scraping every second with ``scrape_configs`` (YAML list items); its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    with running(command, f"{url}/-/ready", folder / "prometheus.log", "prometheus"):
        yield url


@contextmanager
def pushgateway(folder: Path, port: int | None = None) -> Iterator[str]:
    """A Pushgateway (in-memory, nothing persisted); its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port or free_port()}"
    command = [binary("prometheus-pushgateway"), f"--web.listen-address={url.removeprefix('http://')}"]
    with running(command, f"{url}/-/ready", folder / "pushgateway.log", "pushgateway"):
        yield url


@contextmanager
def alertmanager(folder: Path) -> Iterator[str]:
    """An Alertmanager with its own configuration and storage, clustering off; its base URL."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "alertmanager.yml"
    config.write_text("route:\n  receiver: none\n  group_wait: 1h\nreceivers:\n  - name: none\n")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",
    ]
    with running(command, f"{url}/-/ready", folder / "alertmanager.log", "alertmanager"):
        yield url


def query(prometheus_url: str, promql: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The first non-empty result of an instant PromQL query, polled until scrapes have brought data."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.25)
