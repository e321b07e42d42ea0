"""The command line's start-up: what it imports, --version, and global options on either side of the subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import anomaly
from anomaly.cli import BENCHMARK_PROTOCOLS, build_parser, main

REPO = Path(anomaly.__file__).parent.parent
HEAVY = ("torch", "pandas")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_cli_loads_neither_torch_nor_pandas() -> None:
    assert _loaded_after("import anomaly.cli") == []


def test_help_and_every_parser_load_neither_torch_nor_pandas() -> None:
    code = (
        "import contextlib, io\n"
        "from anomaly.cli import build_parser, main\n"
        "build_parser()\n"
        "for argv in (['--help'], ['models', 'policy', 'set', '--help'], ['benchmark', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)"
    )
    assert _loaded_after(code) == []


def test_the_probe_sees_a_heavy_import() -> None:
    assert _loaded_after("import pandas") == ["pandas"]


def test_version_prints_the_library_version() -> None:
    exe = Path(sys.executable).with_name("anomaly")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"anomaly {anomaly.__version__}" == "anomaly 0.2.0"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == anomaly.__version__


def test_the_benchmark_protocols_offered_are_the_benchmarks_own() -> None:
    from anomaly.evaluation.benchmark import PROTOCOLS

    assert BENCHMARK_PROTOCOLS == PROTOCOLS


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list"],
        ["models", "show", "m"],
        ["models", "policy", "show", "m"],
        ["models", "policy", "set", "m", "--set", "threshold.k=3"],
        ["store", "list", "data/store"],
        ["detect", "data.csv", "--out", "out", "--version", "3"],
        ["train", "data.csv", "--out", "model"],
        ["report", "data"],
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_quiet_and_debug_are_taken_before_or_after_the_subcommand(argv: list[str]) -> None:
    parser = build_parser()
    plain = parser.parse_args(argv)
    assert (plain.quiet, plain.debug) == (False, False)
    for flags in (["-q", "--debug"], ["--quiet"]):
        before, after = parser.parse_args([*flags, *argv]), parser.parse_args([*argv, *flags])
        expected = ("-q" in flags or "--quiet" in flags, "--debug" in flags)
        assert (before.quiet, before.debug) == expected == (after.quiet, after.debug), flags
    between = parser.parse_args([argv[0], "-q", *argv[1:]])
    assert between.quiet and not between.debug


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    command = ["detect", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")]
    argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "data file not found" in err


@pytest.mark.parametrize("argv", [["-q", "models", "list"], ["models", "list", "-q"]])
def test_models_list_runs_with_quiet_on_either_side(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main([*argv, "--registry", str(tmp_path / "registry")]) == 0
    assert "(no models)" in capsys.readouterr().out
