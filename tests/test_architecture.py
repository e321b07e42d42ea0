"""The library half never knows about Prefect: flows import the library, not the reverse."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import anomaly

LIBRARY = Path(anomaly.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, however it is written."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            names.update(a.value.split(".")[0] for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def test_no_library_module_imports_prefect_in_source() -> None:
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) >= 10
    offenders = [str(f.relative_to(LIBRARY)) for f in files if {"prefect", "prefect_dask"} & imported_modules(f)]
    assert offenders == []


def test_the_detector_scan_would_catch_an_import(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from prefect import flow\n    import importlib; importlib.import_module('prefect.tasks')\n")
    assert "prefect" in imported_modules(sneaky)


def test_importing_every_library_module_loads_no_prefect() -> None:
    modules = [f"anomaly.{m.name}" for m in pkgutil.iter_modules([str(LIBRARY)])]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'prefect_dask'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "anomaly.cli" in modules and "anomaly.detector" in modules
