"""pyproject.toml against the code: what ``anomaly`` imports is what it declares.

Runtime ``dependencies`` are what the library imports when it runs; an
optional extra (``flows``, ``postgres``, ``test``) may only be imported where
the public API does not load it at import time. Import names are mapped to
distributions by the installed packages' own metadata (``yaml`` → PyYAML).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import anomaly

LIBRARY = Path(anomaly.__file__).parent
REPO = LIBRARY.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _export_modules() -> set[str]:
    """The modules behind the public names: the values of the ``_EXPORTS`` table in ``anomaly/__init__.py``."""
    tree = ast.parse((LIBRARY / "__init__.py").read_text())
    table = next(n.value for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and ast.unparse(n.target) == "_EXPORTS")
    return set(ast.literal_eval(table).values())


#: What the public API is: ``import anomaly``, each module behind a public name, and the command line.
ENTRY_MODULES = {"anomaly", "anomaly.cli", "anomaly.demo", *_export_modules()}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


RUNTIME = _names(PROJECT["dependencies"])
EXTRAS = {extra: _names(reqs) for extra, reqs in PROJECT["optional-dependencies"].items()}


@functools.cache
def _provided() -> dict[str, list[str]]:
    """``{top-level import name: [distributions]}`` of the installed packages (slow: read once)."""
    return packages_distributions()


def _distribution(import_name: str) -> str:
    """The installed distribution that provides a top-level import name."""
    found = _provided().get(import_name)
    assert found, f"no installed distribution provides the module {import_name!r}"
    return canonicalize_name(found[0])


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[str, bool]]:
    """``(dotted module, at_import_time)`` of every import in ``path`` that runs (not under ``TYPE_CHECKING``).

    An import inside a function runs when the function is called: not at import time.
    ``from package import name`` yields ``package.name`` too, in case ``name`` is a module.
    """
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, eager)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, eager) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                found.append((base, eager))
                found.extend((f"{base}.{alias.name}", eager) for alias in child.names)
            visit(child, eager and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text() if source is None else source, filename=str(path)), True)
    return found


def _third_party(module: str) -> str | None:
    """The top-level name of a third-party module; None for the standard library and this project."""
    top = module.split(".")[0]
    return None if not top or top in sys.stdlib_module_names or top in {"anomaly", "flows", "__future__"} else top


LIBRARY_FILES = {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}
IMPORTS = {module: _imports(path) for module, path in LIBRARY_FILES.items()}


def _loaded_at_import(roots: set[str]) -> set[str]:
    """The library modules that importing ``roots`` executes: their import-time imports, followed."""
    seen: set[str] = set()
    todo = [r for r in roots if r in LIBRARY_FILES]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a module's packages run first
        todo += [target for target, eager in IMPORTS[module] if eager and target in LIBRARY_FILES]
    return seen


def test_every_third_party_import_of_the_library_is_declared() -> None:
    declared = RUNTIME.union(*EXTRAS.values())
    undeclared = sorted(
        f"{module} imports {top} ({_distribution(top)})"
        for module, found in IMPORTS.items()
        for target, _ in found
        if (top := _third_party(target)) and _distribution(top) not in declared
    )
    assert undeclared == []


def test_what_the_public_api_loads_at_import_is_a_runtime_dependency() -> None:
    loaded = _loaded_at_import(ENTRY_MODULES)
    assert {"anomaly.core.detector", "anomaly.ops.registry", "anomaly.io.sources"} <= loaded
    assert "anomaly.io.sql" not in loaded, "the SQL source is loaded only when a source of kind sql is built"
    optional = sorted(
        f"{module} imports {top} ({_distribution(top)}) when it is imported"
        for module in loaded
        for target, eager in IMPORTS[module]
        if eager and (top := _third_party(target)) and _distribution(top) not in RUNTIME
    )
    assert optional == []


def test_importing_the_public_api_loads_no_module_of_the_flows_or_postgres_extras() -> None:
    extra_only = (EXTRAS["flows"] | EXTRAS["postgres"]) - RUNTIME
    provided = {name for name, dists in _provided().items() if canonicalize_name(dists[0]) in extra_only}
    assert {"sqlalchemy", "psycopg", "prefect"} <= provided
    code = (
        "import importlib, json, sys\n"
        f"for name in {sorted(ENTRY_MODULES)!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(provided)!r}))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_every_runtime_dependency_is_imported_by_the_library() -> None:
    used = {_distribution(top) for found in IMPORTS.values() for target, _ in found if (top := _third_party(target))}
    assert sorted(RUNTIME - used) == []


def test_the_flows_need_only_the_runtime_dependencies_and_the_flows_extra() -> None:
    allowed = RUNTIME | EXTRAS["flows"]
    outside = sorted(
        f"flows/{path.name} imports {top} ({_distribution(top)})"
        for path in sorted((REPO / "flows").glob("*.py"))
        for target, _ in _imports(path)
        if (top := _third_party(target)) and _distribution(top) not in allowed
    )
    assert outside == []


def test_test_only_packages_are_in_the_test_extra() -> None:
    assert {"pytest", "pytest-xdist", "hypothesis", "selenium", "scipy", "jsonschema"} <= EXTRAS["test"]
    assert not EXTRAS["test"] & RUNTIME


def test_torch_is_pinned_exactly_and_the_version_is_the_librarys() -> None:
    torch = [Requirement(r) for r in PROJECT["dependencies"] if canonicalize_name(Requirement(r).name) == "torch"]
    assert [str(r.specifier) for r in torch] == ["==2.13.0"]
    assert PROJECT["version"] == anomaly.__version__


def test_make_install_installs_every_extra_under_the_constraints() -> None:
    recipe = re.search(r"pip install .*-c constraints\.txt -e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text())
    assert recipe is not None, "the Makefile's pip install line"
    assert set(recipe.group(1).split(",")) == set(EXTRAS) == {"flows", "postgres", "test"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import yaml\n", [("yaml", True)]),
        ("def f():\n    import sqlalchemy.orm\n", [("sqlalchemy.orm", False)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n", [("typing", True), ("typing.TYPE_CHECKING", True)]),
        ("class A:\n    import numpy as np\n", [("numpy", True)]),
        ("from . import fileio\n", [("anomaly.core", True), ("anomaly.core.fileio", True)]),
    ],
)
def test_the_scan_tells_import_time_from_lazy_imports(source: str, expected: list[tuple[str, bool]]) -> None:
    placed_at = LIBRARY / "core" / "probe.py"  # not read: the source is given, the path places it in anomaly.core
    assert _imports(placed_at, source) == expected
