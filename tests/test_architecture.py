"""The library's layers, checked from its source.

``anomaly.core`` (config, data, model, training, scoring, thresholds,
events, detector, persistence) imports nothing above it; ``anomaly.io``
(sources, store) only the core; ``anomaly.ops`` (workspace, registry, jobs,
alerts, reports, webhooks) the core and io; ``anomaly.evaluation`` the core
and io, never ops. No module imports another's ``_private`` name, no module
imports Prefect, no import cycle exists between modules, and benchmark
scripts use the library's public names without patching it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import anomaly

LIBRARY = Path(anomaly.__file__).parent
REPO = LIBRARY.parent
#: Which layers each layer may import (besides itself and the shared ``anomaly.errors``).
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "ops": {"core", "io"},
    "evaluation": {"core", "io"},
}
#: Top-level modules that front the layers (they may import any of them).
FRONTS = {"cli", "demo", "__init__", "errors", "_version"}


def library_modules() -> dict[str, Path]:
    """``{dotted name: path}`` of every module under ``anomaly/``."""
    out = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, root: Path = REPO) -> list[tuple[str, list[str], bool]]:
    """``(module, names, runs)`` of every import in ``path``, relative ones resolved.

    ``runs`` is False for imports under ``if TYPE_CHECKING:``, which only a
    type checker executes; an import inside a function runs when it is
    called, so it counts (a lazy import does not make a cycle go away).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], id(node) not in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, [a.name for a in node.names], id(node) not in typing_only))
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "anomaly" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ALLOWED else "front" if parts[1] in FRONTS else parts[1]


def test_every_module_belongs_to_a_layer_or_is_a_front() -> None:
    strays = [m for m in library_modules() if m != "anomaly" and layer(m) not in {*ALLOWED, "front"}]
    assert strays == []


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(name: str) -> None:
    offenders = []
    for module, path in library_modules().items():
        if layer(module) != name:
            continue
        for target, _, _ in imports(path):
            other = layer(target)
            if target.startswith("anomaly.") and other not in {name, "front", None, *ALLOWED[name]}:
                offenders.append(f"{module} imports {target}")
            if other == "front" and target != "anomaly.errors" or target == "anomaly":
                offenders.append(f"{module} imports the front end {target}")
    assert offenders == []


def test_no_module_imports_another_modules_private_name() -> None:
    sources = {**library_modules(), **{p.stem: p for p in (REPO / "flows").glob("*.py")}, **{p.stem: p for p in (REPO / "benchmarks").glob("*.py")}}
    offenders = [
        f"{where} imports {target}.{name}"
        for where, path in sources.items()
        for target, names, _ in imports(path)
        if target.startswith(("anomaly", "flows"))
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert offenders == []


def test_no_import_cycle_between_library_modules() -> None:
    modules = library_modules()
    graph = {m: {t for t, _, runs in imports(p) if runs and t in modules and t != m} for m, p in modules.items()}
    for module, path in modules.items():  # ``from package import module`` is an import of that module
        for target, names, runs in imports(path):
            graph[module] |= {f"{target}.{n}" for n in names if runs and f"{target}.{n}" in modules}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_library_module_imports_prefect() -> None:
    offenders = [m for m, p in library_modules().items() if any(t.split(".")[0] in {"prefect", "prefect_dask"} for t, _, _ in imports(p))]
    assert offenders == []


def test_importing_every_library_module_loads_no_prefect() -> None:
    modules = sorted(library_modules())
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'prefect', 'prefect_dask'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"
    assert {"anomaly.cli", "anomaly.core.detector", "anomaly.ops.jobs"} <= set(modules)


#: Packages whose objects a benchmark script must not patch: the library and its front end.
PRODUCT = {"anomaly", "flows"}


def test_benchmark_scripts_use_the_public_api_and_patch_nothing() -> None:
    offenders = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text())
        bound = set()  # names this script binds to product modules or objects
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in PRODUCT}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PRODUCT:
                bound |= {a.asname or a.name for a in node.names}
        for target, names, _ in imports(path):
            if target.startswith("anomaly."):
                offenders.append(f"{path.name}: imports {target} (the public API is `from anomaly import ...`)")
            elif target == "anomaly":
                offenders += [f"{path.name}: imports {n}, not in anomaly.__all__" for n in names if n not in anomaly.__all__]
            elif target.split(".")[0] in {"unittest", "mock"} and ("mock" in target or "mock" in names):
                offenders.append(f"{path.name}: imports mock")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in {"setattr", "delattr"}:
                offenders.append(f"{path.name}: {node.func.id}")
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                root = target
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) and (root.id in bound or root.id.endswith("module")):
                    offenders.append(f"{path.name}: assigns {ast.unparse(target)}")
    assert offenders == []


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in anomaly.__all__ if not hasattr(anomaly, name)]
    assert missing == []


def test_the_scan_sees_imports_however_they_are_written(tmp_path: Path) -> None:
    sneaky = tmp_path / "anomaly" / "core" / "probe.py"
    sneaky.parent.mkdir(parents=True)
    sneaky.write_text(
        "from typing import TYPE_CHECKING\nfrom ..ops import registry\n"
        "def f():\n    from anomaly.core.data import _private\n"
        "if TYPE_CHECKING:\n    from anomaly.ops import jobs\n"
    )
    found = imports(sneaky, tmp_path)
    assert ("anomaly.ops", ["registry"], True) in found
    assert ("anomaly.core.data", ["_private"], True) in found
    assert ("anomaly.ops", ["jobs"], False) in found
