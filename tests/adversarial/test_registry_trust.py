"""Hostile registries and model files: refused with one named error, nothing outside the registry read.

Each case tampers with a copy of a small registry (or a plain model folder)
the way an attacker or a crash would, then checks the exact error class, that
the message names the file and the value, and that the registry is
byte-identical afterwards. Cases that would allocate or run code on the
unfixed library run in a bounded child process.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import torch

from anomaly.cli import main
from anomaly.core.config import DetectorConfig
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.errors import ConfigError, ModelFileError
from anomaly.ops.registry import ModelRegistry, RegistryError
from tests.adversarial.conftest import Outcome, assert_one_line_error, run_cli, run_python, snapshot
from tests.conftest import TINY, TINY_SETTINGS, kill_when_stalled, long_points

CONFIG = TINY.replace(training={"num_threads": 1, "epochs": 2})
MODEL_FILES = ("config.json", "weights.pt", "scaler.json", "detector.json", "history.json", "residuals.npz", "metadata.json")


# -- fixtures and tampering helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(two_metrics: pd.DataFrame) -> LSTMAutoencoderDetector:
    return LSTMAutoencoderDetector(CONFIG).fit(two_metrics.iloc[:600], progress=False)


@pytest.fixture(scope="module")
def template(fitted: LSTMAutoencoderDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 000001..000003 of 'm'; production promoted to 000001 then 000002 (never changed)."""
    root = tmp_path_factory.mktemp("trust") / "registry"
    registry = ModelRegistry(root)
    for i in range(3):
        registry.publish(fitted, "m", run_id=f"v{i + 1}")
    registry.promote("m", 1)
    registry.promote("m", 2)
    fitted.save(root.parent / "plain")
    return root


@pytest.fixture
def box(template: Path, tmp_path: Path) -> Path:
    """A folder holding a private copy of the registry (``registry/``) and room beside it."""
    shutil.copytree(template, tmp_path / "registry")
    return tmp_path


@pytest.fixture
def registry(box: Path) -> ModelRegistry:
    return ModelRegistry(box / "registry")


@pytest.fixture
def plain(template: Path, tmp_path: Path) -> Path:
    """A private copy of the fitted model as a plain folder (``anomaly detect --model``)."""
    return shutil.copytree(template.parent / "plain", tmp_path / "plain")


def _version(registry: ModelRegistry, version: str) -> Path:
    return registry.root / "m" / "versions" / version


def _rehash(folder: Path, drop: str | None = None) -> None:
    """Rewrite the manifest to match the files as an attacker would (optionally leaving one out)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    files = {}
    for name in manifest["files"]:
        if name == drop:
            continue
        data = (folder / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["files"] = files
    path.write_text(json.dumps(manifest))


def _write_state(registry: ModelRegistry, file: str, text: str) -> None:
    (registry.root / "m" / file).write_text(text)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    """``anomaly ARGS`` in this process (for cases that cannot allocate or hang)."""
    code = main(args)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


# -- 1. aliases: only six-digit versions that exist ---------------------------------------

ALIAS_VALUES = [
    ("../../../evil", r"'\.\./\.\./\.\./evil'"),
    ("ABSOLUTE", r"points to '/"),
    (None, r"None"),
    (2, r"\b2\b"),
    (["000001"], r"\['000001'\]"),
    ({"version": "000001"}, r"\{'version'"),
    ("1", r"'1'"),
    ("000001/../000002", r"'000001/\.\./000002'"),
]


@pytest.mark.parametrize(("value", "named"), ALIAS_VALUES, ids=[repr(v) for v, _ in ALIAS_VALUES])
def test_an_alias_that_is_not_a_version_is_refused_and_nothing_outside_is_loaded(
    box: Path, registry: ModelRegistry, value: object, named: str
) -> None:
    evil = shutil.copytree(_version(registry, "000003"), box / "evil")  # a complete, valid model outside
    if value == "ABSOLUTE":
        value = str(evil)
    _write_state(registry, "aliases.json", json.dumps({"production": value}))
    before = snapshot(box)
    for call in (lambda: registry.load("m"), lambda: registry.load("m", alias="production"), lambda: registry.resolve("m")):
        with pytest.raises(RegistryError, match=rf"aliases\.json.*'production'.*{named}"):
            call()
    with pytest.raises(RegistryError, match=r"aliases\.json"):
        registry.promote("m", 3)
    assert snapshot(box) == before


def test_an_alias_to_a_version_that_does_not_exist_names_it(registry: ModelRegistry) -> None:
    _write_state(registry, "aliases.json", json.dumps({"production": "000009"}))
    _write_state(registry, "alias-history.json", json.dumps({"production": ["000002", "000009"]}))
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match=r"alias 'production' of model 'm' points to 000009, which does not exist; versions: 000001, 000002, 000003"):
        registry.load("m")
    assert snapshot(registry.root) == before


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('["000001"]', r"not a mapping"),
        ('{"../evil": "000001"}', r"'\.\./evil'"),
        ('"production"', r"not a mapping"),
        ("[" * 100_000 + "]" * 100_000, r"nested too deeply"),
    ],
    ids=["list", "bad-alias-name", "string", "nested-100000-deep"],
)
def test_an_aliases_file_that_is_not_a_mapping_of_names_is_refused(
    registry: ModelRegistry, text: str, named: str
) -> None:
    _write_state(registry, "aliases.json", text)
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match=rf"aliases\.json.*{named}"):
        registry.aliases("m")
    with pytest.raises(RegistryError, match=r"aliases\.json"):
        registry.load("m")
    assert snapshot(registry.root) == before


@pytest.mark.parametrize(
    ("history", "named"),
    [
        ({"production": "000001"}, r"'000001'"),
        ({"production": [None, "000002"]}, r"\[None, '000002'\]"),
        ({"production": ["../x", "000002"]}, r"\['\.\./x', '000002'\]"),
        (["000001", "000002"], r"not a mapping"),
    ],
    ids=["string-trail", "null-entry", "path-entry", "list"],
)
def test_an_invalid_alias_history_is_refused_by_promote_and_rollback(
    registry: ModelRegistry, history: object, named: str
) -> None:
    _write_state(registry, "alias-history.json", json.dumps(history))
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match=rf"alias-history\.json.*{named}"):
        registry.rollback("m")
    with pytest.raises(RegistryError, match=r"alias-history\.json"):
        registry.promote("m", 3)
    assert snapshot(registry.root) == before


# -- 2. every model file verified, nothing followed out of the registry ------------------


@pytest.mark.parametrize("left_out", MODEL_FILES)
def test_a_model_file_missing_from_the_manifest_is_refused(
    registry: ModelRegistry, left_out: str
) -> None:
    folder = _version(registry, "000001")
    if left_out == "weights.pt":  # the attacker's own weights, never verified
        weights = torch.load(folder / "weights.pt", weights_only=True)
        torch.save({k: torch.zeros_like(v) for k, v in weights.items()}, folder / "weights.pt")
    _rehash(folder, drop=left_out)
    before = snapshot(registry.root)
    with pytest.raises(ModelFileError, match=rf"manifest\.json' does not list '{left_out}'"):
        registry.verify("m", "000001")
    with pytest.raises(ModelFileError, match=rf"does not list '{left_out}'"):
        registry.load("m", "000001")
    assert snapshot(registry.root) == before


def _link_weights(registry: ModelRegistry, box: Path) -> None:
    folder = _version(registry, "000002")
    outside = shutil.copy(folder / "weights.pt", box / "weights.pt")
    (folder / "weights.pt").unlink()
    (folder / "weights.pt").symlink_to(outside)


def _link_config(registry: ModelRegistry, box: Path) -> None:
    folder = _version(registry, "000002")
    outside = shutil.copy(folder / "config.json", box / "config.json")
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(outside)


def _link_version(registry: ModelRegistry, box: Path) -> None:
    folder = _version(registry, "000002")
    outside = box / "outside-version"
    folder.rename(outside)
    folder.symlink_to(outside)


def _link_versions_folder(registry: ModelRegistry, box: Path) -> None:
    folder = registry.root / "m" / "versions"
    outside = box / "outside-versions"
    folder.rename(outside)
    folder.symlink_to(outside)


def _link_model_folder(registry: ModelRegistry, box: Path) -> None:
    folder = registry.root / "m"
    outside = box / "outside-model"
    folder.rename(outside)
    folder.symlink_to(outside)


@pytest.mark.parametrize(
    ("tamper", "error", "named"),
    [
        (_link_weights, ModelFileError, r"000002/weights\.pt' is a symbolic link"),
        (_link_config, ModelFileError, r"000002/config\.json' is a symbolic link"),
        (_link_version, ModelFileError, r"versions/000002' is a symbolic link"),
        (_link_versions_folder, RegistryError, r"m/versions' is a symbolic link"),
        (_link_model_folder, RegistryError, r"registry/m' is a symbolic link"),
    ],
    ids=["weights-file", "config-file", "version-folder", "versions-folder", "model-folder"],
)
def test_symbolic_links_in_a_version_are_never_followed(
    box: Path, registry: ModelRegistry, tamper: Callable[[ModelRegistry, Path], None], error: type[Exception], named: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tamper(registry, box)
    before = snapshot(box)
    loaded: list[object] = []
    monkeypatch.setattr("anomaly.core.persistence.torch.load", lambda *a, **k: loaded.append(a))
    with pytest.raises(error, match=named):
        registry.load("m", "000002")
    with pytest.raises(error, match=named):
        registry.verify("m", "000002")
    assert loaded == [], "nothing may be read through a link"
    assert snapshot(box) == before


# -- 3. counter.json: an integer in range, never an invisible version --------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"last_version": 999999}', r"every version number up to 999999"),
        ('{"last_version": "abc"}', r"counter\.json.*'abc'"),
        ('"abc"', r"counter\.json.*'abc'"),
        ('{"last_version": -5}', r"counter\.json.*-5"),
        ('{"last_version": true}', r"counter\.json.*True"),
        ('{"last_version": 1.5}', r"counter\.json.*1\.5"),
        ('{"last_version": 10000000}', r"counter\.json.*10000000"),
        ("{" * 50_000, r"counter\.json"),
    ],
    ids=["exhausted", "text", "bare-text", "negative", "bool", "float", "seven-digits", "garbage"],
)
def test_an_invalid_or_exhausted_counter_refuses_to_publish_and_leaves_nothing(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector, text: str, error: str
) -> None:
    _write_state(registry, "counter.json", text)
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match=error):
        registry.publish(fitted, "m")
    assert snapshot(registry.root) == before, "no staging folder, no invisible version"
    assert registry.versions("m") == ["000001", "000002", "000003"]


# -- 4. configuration bounds, before anything is allocated (bounded children) -----------

LOAD_CASES = """
import json, sys
from anomaly.ops.registry import ModelRegistry
for root in sys.argv[1:]:
    try:
        ModelRegistry(root).load("m")
        print(json.dumps([root, "loaded", ""]), flush=True)
    except Exception as exc:
        print(json.dumps([root, type(exc).__name__, str(exc)]), flush=True)
"""


def _huge_declared_tensor(path: Path) -> None:
    """A zip state_dict whose one tensor declares 10**12 floats backed by 12 bytes."""

    class Storage:
        pass

    class Tensor:
        def __reduce__(self) -> tuple[Any, ...]:
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (10**6, 10**6), (10**6, 1), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return ("storage", torch.FloatStorage, "0", "cpu", 10**12) if isinstance(obj, Storage) else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump(collections.OrderedDict([("head.weight", Tensor())]))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/data.pkl", data.getvalue())
        archive.writestr("weights/byteorder", "little")
        archive.writestr("weights/data/0", b"\0" * 12)
        archive.writestr("weights/version", "3\n")


def test_hostile_sizes_in_a_saved_version_are_refused_before_allocation(box: Path, template: Path) -> None:
    """Each registry's production version asks for something no real model needs."""

    def config_field(section: str, key: str, value: int) -> Callable[[Path], None]:
        def tamper(folder: Path) -> None:
            config = json.loads((folder / "config.json").read_text())
            config[section][key] = value
            (folder / "config.json").write_text(json.dumps(config))

        return tamper

    def many_metrics(folder: Path) -> None:
        state = json.loads((folder / "detector.json").read_text())
        state["metrics"] = [f"m{i}" for i in range(2_000_000)]
        (folder / "detector.json").write_text(json.dumps(state))

    def huge_tensor(folder: Path) -> None:
        _huge_declared_tensor(folder / "weights.pt")

    cases: dict[str, tuple[Callable[[Path], None], str, str]] = {
        "hidden": (config_field("model", "hidden_size", 200_000), "ModelFileError", "model.hidden_size"),
        "latent": (config_field("model", "latent_size", 10**9), "ModelFileError", "model.latent_size"),
        "layers": (config_field("model", "num_layers", 100_000), "ModelFileError", "model.num_layers"),
        "metrics": (many_metrics, "ModelFileError", "2,000,000 metrics"),
        "tensor": (huge_tensor, "ModelFileError", "not a plain state_dict of tensors"),
    }
    roots = {}
    for label, (tamper, _, _) in cases.items():
        root = shutil.copytree(template, box / label)
        folder = root / "m" / "versions" / "000002"
        tamper(folder)
        _rehash(folder)
        roots[label] = root
    before = {label: snapshot(root) for label, root in roots.items()}
    outcome = run_python(LOAD_CASES, *map(str, roots.values()), memory_mb=2048, timeout_s=60)
    results = {Path(root).name: (kind, message) for root, kind, message in map(json.loads, outcome.stdout.splitlines())}
    assert set(results) == set(cases), outcome.stderr[-2000:]
    for label, (_, error, named) in cases.items():
        kind, message = results[label]
        assert kind == error and named in message, (label, kind, message[:500])
        assert "\n" not in message and "weights_only" not in message, (label, message[:500])
        assert snapshot(roots[label]) == before[label], label


def test_a_huge_aliases_file_is_refused_without_reading_it(registry: ModelRegistry) -> None:
    with open(registry.root / "m" / "aliases.json", "wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: 3 GB that occupy no disk
    versions = snapshot(registry.root / "m" / "versions")
    code = "import sys\nfrom anomaly.ops.registry import ModelRegistry\nModelRegistry(sys.argv[1]).load('m')"
    outcome = run_python(code, str(registry.root), memory_mb=1536, timeout_s=60)
    assert outcome.returncode != 0
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("anomaly.ops.registry.RegistryError:") and "aliases.json" in last and "3,221,225,472 bytes" in last, last
    assert (registry.root / "m" / "aliases.json").stat().st_size == 3 * 1024**3
    assert snapshot(registry.root / "m" / "versions") == versions


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("model.hidden_size=200000", "model.hidden_size"),
        ("training.batch_size=100000000", "training.batch_size"),
        ("training.seed=1000000000000000000000000000000", "training.seed"),
    ],
    ids=["hidden-size", "batch-size", "seed"],
)
def test_a_users_own_set_is_bounded_too(box: Path, setting: str, named: str) -> None:
    data = box / "history.csv"
    frame = pd.DataFrame({"cpu": [float(i % 17) for i in range(400)]}, index=pd.date_range("2026-01-01", periods=400, freq="5min"))
    frame.to_csv(data, index_label="timestamp")
    before = snapshot(box / "registry")
    outcome = run_cli(["train", str(data), "--name", "m", "--registry", str(box / "registry"), *TINY_SETTINGS, "--set", setting],
                      memory_mb=2048, timeout_s=90)
    assert_one_line_error(outcome, named, setting.split("=")[1])
    assert snapshot(box / "registry") == before


def test_a_configs_own_bounds_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden_size must be an integer <= 4,096, got 200000"):
        DetectorConfig().replace(model={"hidden_size": 200_000})
    with pytest.raises(ConfigError, match=r"model\.hidden_size 4096, latent_size 8 and num_layers 16 make [\d,]+ parameters, more than"):
        DetectorConfig().replace(model={"hidden_size": 4096, "num_layers": 16})
    assert DetectorConfig().replace(model={"hidden_size": 512, "num_layers": 4}).model.hidden_size == 512


# -- 5. hostile weights: one line, nothing run, no advice to disable the safety ----------


class _Exploit:
    """Pickles to "create this file" when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _torch_bytes(obj: object) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def _zip_with_pickle(pickled: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("weights/data.pkl", pickled)
        archive.writestr("weights/byteorder", "little")
        archive.writestr("weights/version", "3\n")
    return out.getvalue()


def _zip_of(name: str, data: bytes, compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def _replaced(good: dict[str, torch.Tensor], key: str, value: object) -> dict[str, object]:
    return {k: (value if k == key else v) for k, v in good.items()}


FIRST = "encoder.weight_ih_l0"
# label: (the weights file, given a marker path and the fitted state_dict; what the one line must say)
WEIGHTS_CASES: dict[str, tuple[Callable[[Path, dict[str, torch.Tensor]], bytes], str]] = {
    "raw-pickle": (lambda marker, good: pickle.dumps(_Exploit(marker)), r"tensors \(not a torch zip archive\)"),
    "zip-pickle": (
        lambda marker, good: _zip_with_pickle(pickle.dumps({"x": _Exploit(marker)}, protocol=2)),
        r"tensors \(UnpicklingError: .*GLOBAL \w+\.system",
    ),
    "list": (lambda marker, good: _torch_bytes([1, 2, 3]), r"tensors \(it holds a list\)"),
    "non-tensor": (lambda marker, good: _torch_bytes(_replaced(good, FIRST, 5)), rf"tensors \('{re.escape(FIRST)}' holds an int\)"),
    "int-tensor": (
        lambda marker, good: _torch_bytes(_replaced(good, FIRST, torch.zeros(good[FIRST].shape, dtype=torch.int64))),
        rf"'{re.escape(FIRST)}' holds a tensor of torch\.int64",
    ),
    "wrong-shape": (
        lambda marker, good: _torch_bytes(_replaced(good, "head.weight", torch.zeros(3, 3))),
        r"do not fit the configured model: 'head\.weight' has shape \(3, 3\), the model needs \(2, 16\)",
    ),
    "missing-key": (
        lambda marker, good: _torch_bytes({k: v for k, v in good.items() if k != "head.bias"}),
        r"do not fit the configured model: 'head\.bias' is missing",
    ),
    "oversized": (lambda marker, good: _zip_of("weights/extra", b"\0" * (3 * 1024 * 1024)), r"it is [\d,]+ bytes, more than the [\d,]+ bytes"),
    "deflate-bomb": (  # 64 MB of zeros in about 64 KB
        lambda marker, good: _zip_of("weights/data/0", b"\0" * (64 * 1024 * 1024), zipfile.ZIP_DEFLATED),
        r"its records unpack to 67,108,864 bytes, more than the [\d,]+ bytes",
    ),
    "not-a-zip": (lambda marker, good: b"\x00" * 64, r"tensors \(not a torch zip archive\)"),
}


@pytest.mark.parametrize("case", list(WEIGHTS_CASES))
def test_hostile_weights_in_a_plain_folder_are_one_line_and_run_nothing(
    plain: Path, tmp_path: Path, fitted: LSTMAutoencoderDetector, case: str
) -> None:
    marker = tmp_path / "pwned"
    make, message = WEIGHTS_CASES[case]
    (plain / "weights.pt").write_bytes(make(marker, {k: v.detach().clone() for k, v in fitted.model_.state_dict().items()}))
    before = snapshot(plain)
    with pytest.raises(ModelFileError, match=message) as info:
        LSTMAutoencoderDetector.load(plain)
    text = str(info.value)
    assert "\n" not in text and "weights_only" not in text and "trust" not in text, text
    assert not marker.exists(), "a hostile weights file ran code"
    assert snapshot(plain) == before


def test_detect_with_a_hostile_weights_file_is_one_line_exit_2(plain: Path, tmp_path: Path, fitted: LSTMAutoencoderDetector) -> None:
    marker = tmp_path / "pwned"
    (plain / "weights.pt").write_bytes(_zip_with_pickle(pickle.dumps({"x": _Exploit(marker)}, protocol=2)))
    data = tmp_path / "new.csv"
    frame = pd.DataFrame({m: [1.0] * 300 for m in fitted.metrics_}, index=pd.date_range("2026-01-01", periods=300, freq="5min"))
    frame.to_csv(data, index_label="timestamp")
    outcome = run_cli(["detect", str(data), "--model", str(plain), "--out", str(tmp_path / "out")], timeout_s=60)
    assert_one_line_error(outcome, "weights.pt", "not a plain state_dict of tensors")
    assert "weights_only" not in outcome.stderr and "trust" not in outcome.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_detect_by_name_with_a_hostile_weights_file_and_matching_manifest(
    registry: ModelRegistry, tmp_path: Path, fitted: LSTMAutoencoderDetector, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    folder = _version(registry, "000002")
    (folder / "weights.pt").write_bytes(_torch_bytes({"encoder.weight_ih_l0": "not a tensor"}))
    _rehash(folder)
    before = snapshot(registry.root)
    data = tmp_path / "new.csv"
    pd.DataFrame({m: [1.0] * 300 for m in fitted.metrics_}, index=pd.date_range("2026-01-01", periods=300, freq="5min")).to_csv(
        data, index_label="timestamp"
    )
    outcome = _cli(["detect", str(data), "--name", "m", "--out", str(tmp_path / "out"), "--registry", str(registry.root)], capsys)
    assert_one_line_error(outcome, "000002/weights.pt", "'encoder.weight_ih_l0' holds a str")
    assert not marker.exists() and snapshot(registry.root) == before


# -- 6. broken versions are listed as broken; the rest still shown -----------------------


def _empty(folder: Path, box: Path) -> None:
    folder.mkdir()


def _garbage_manifest(folder: Path, box: Path) -> None:
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")


def _linked(folder: Path, box: Path) -> None:
    folder.symlink_to(shutil.copytree(folder.parent / "000003", box / "elsewhere"))


@pytest.mark.parametrize(
    ("make", "why"),
    [(_empty, "has no manifest.json"), (_garbage_manifest, "cannot read"), (_linked, "is a symbolic link")],
    ids=["empty", "garbage-manifest", "symlink"],
)
def test_a_broken_version_is_listed_as_broken_and_the_rest_are_shown(
    box: Path, registry: ModelRegistry, capsys: pytest.CaptureFixture[str], make: Callable[[Path, Path], None], why: str
) -> None:
    make(_version(registry, "000004"), box)
    before = snapshot(box)
    root = ["--registry", str(registry.root)]

    listed = _cli(["models", "list", *root], capsys)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[:1] == ["m"])
    assert "production=000002" in row and "000004" in row and "broken" in row, row

    shown = _cli(["models", "show", "m", *root], capsys)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()}
    assert list(rows) == ["000004", "000003", "000002", "000001"]
    assert "broken" in rows["000004"] and why in rows["000004"], rows["000004"]
    assert all("broken" not in rows[v] for v in ("000001", "000002", "000003"))
    assert rows["000002"].rstrip().endswith("production")

    loaded = _cli(["detect", str(box / "none.csv"), "--name", "m", "--version", "4", "--out", str(box / "out"), *root], capsys)
    assert_one_line_error(loaded, "000004", why)
    with pytest.raises(ModelFileError, match=why):
        registry.load("m", 4)
    assert registry.load("m").version.version == "000002"
    assert snapshot(box) == before


# -- 7. the CLI's registry commands on tampered state: exit 2, nothing changed -----------


@pytest.mark.parametrize(
    ("file", "text", "args", "named"),
    [
        ("aliases.json", '{"production": null}', ["models", "promote", "m", "3"], "aliases.json"),
        ("alias-history.json", '{"production": 7}', ["models", "rollback", "m"], "alias-history.json"),
        ("counter.json", '{"last_version": "abc"}', ["models", "prune", "m", "--keep", "0"], "counter.json"),
        ("aliases.json", '{"production": "../../../evil"}', ["detect", "{box}/x.csv", "--name", "m", "--out", "{box}/out"], "'../../../evil'"),
    ],
    ids=["promote", "rollback", "prune", "detect"],
)
def test_registry_commands_on_tampered_state_are_one_line_and_change_nothing(
    box: Path, registry: ModelRegistry, capsys: pytest.CaptureFixture[str], file: str, text: str, args: list[str], named: str
) -> None:
    _write_state(registry, file, text)
    before = snapshot(box)
    outcome = _cli([a.format(box=box) for a in args] + ["--registry", str(registry.root)], capsys)
    assert_one_line_error(outcome, named)
    assert snapshot(box) == before


# -- 8. crash edges ----------------------------------------------------------------------

STALLED_PROMOTE = """
import os, sys, time
from pathlib import Path

import anomaly.core.fileio as fileio
from anomaly.ops.registry import ModelRegistry

root, marker = sys.argv[1:3]
real_replace = os.replace


def stalled_replace(src, dst):
    if Path(dst).name == "aliases.json":  # alias-history.json is written, aliases.json not yet
        Path(marker).write_text("stalled")
        time.sleep(300)
    return real_replace(src, dst)


fileio.os.replace = stalled_replace
ModelRegistry(root).promote("m", 3)
print("promoted; should have been killed", flush=True)
"""


def test_a_promote_killed_between_its_two_files_leaves_rollback_meaningful(registry: ModelRegistry, tmp_path: Path) -> None:
    marker = tmp_path / "stalled"
    kill_when_stalled(STALLED_PROMOTE, [str(registry.root), str(marker)], marker, "between the alias files")
    leaked = [p.name for p in (registry.root / "m").iterdir() if p.name.startswith(".aliases.json.")]
    assert leaked, "the killed writer's temporary file is what this test must see cleaned up"
    assert registry.aliases("m")["production"] == "000003", "the promotion was recorded: it counts"
    assert registry.rollback("m") == "000002", "rollback must undo the promotion, not repeat the current target"
    assert registry.aliases("m") == {"production": "000002"}
    assert json.loads((registry.root / "m" / "aliases.json").read_text()) == {"production": "000002"}
    assert registry.rollback("m") == "000001"
    assert not [p.name for p in (registry.root / "m").iterdir() if p.name.startswith((".aliases.json.", ".alias-history.json."))]


def test_a_rollback_recorded_before_a_crash_counts(registry: ModelRegistry) -> None:
    """The state a rollback from 000002 leaves when killed after its history write."""
    _write_state(registry, "alias-history.json", json.dumps({"production": ["000001"]}))
    assert registry.aliases("m") == {"production": "000001"}
    assert registry.load("m").version.version == "000001"
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("m")
    registry.promote("m", 3)
    assert json.loads((registry.root / "m" / "aliases.json").read_text()) == {"production": "000003"}
    assert registry.rollback("m") == "000001"


STALLED_PUBLISH = """
import sys, time
from pathlib import Path

import anomaly.ops.registry as registry
from anomaly.core.detector import LSTMAutoencoderDetector

model, root, marker = sys.argv[1:4]
detector = LSTMAutoencoderDetector.load(model)
real = registry.fsync_dir


def stalled(folder):  # called right after the version is renamed into place
    Path(marker).write_text("stalled")
    time.sleep(300)


registry.fsync_dir = stalled
registry.ModelRegistry(root).publish(detector, "m", run_id="killed")
print("published; should have been killed", flush=True)
"""


def test_a_publish_killed_after_its_rename_never_lets_a_number_be_reused(
    registry: ModelRegistry, template: Path, fitted: LSTMAutoencoderDetector, tmp_path: Path
) -> None:
    marker = tmp_path / "stalled"
    kill_when_stalled(STALLED_PUBLISH, [str(template.parent / "plain"), str(registry.root), str(marker)], marker, "after rename")
    assert registry.versions("m") == ["000001", "000002", "000003", "000004"]
    assert registry.prune("m", keep=0) == ["000001", "000003", "000004"]
    assert registry.publish(fitted, "m").version == "000005", "000004 was handed out before: never again"


def test_a_lagging_counter_is_caught_up_before_pruning(registry: ModelRegistry, fitted: LSTMAutoencoderDetector) -> None:
    """A registry whose counter lags (written by an older version that crashed) still never reuses a number."""
    _write_state(registry, "counter.json", '{"last_version": 1}\n')
    assert registry.prune("m", keep=0) == ["000001", "000003"]
    assert registry.publish(fitted, "m").version == "000004"


def test_temporaries_of_killed_writers_are_removed_under_the_lock(registry: ModelRegistry) -> None:
    model_dir = registry.root / "m"
    leaked = [".aliases.json.x1y2", ".alias-history.json.ab_c", ".counter.json.9zq"]
    for name in leaked:
        (model_dir / name).write_text("{}")
    registry.promote("m", 3)
    assert not {p.name for p in model_dir.iterdir()} & set(leaked)
    assert registry.aliases("m") == {"production": "000003"}


# -- 9. the scheduled score flow: a tampered group fails alone ---------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_a_tampered_alias_fails_its_group_alone_in_the_score_flow(tmp_path: Path) -> None:
    from anomaly.ops.jobs import plan_groups, train_group
    from anomaly.ops.workspace import STORE
    from anomaly.io.store import RawStore
    from anomaly.evaluation.synthetic import clean_metrics
    from flows.score import score_flow

    series = clean_metrics(1000, metrics=("cpu", "requests"), seed=12)
    workspace, models = tmp_path / "ws", tmp_path / "models"
    RawStore(workspace / STORE).append(long_points(series.iloc[:800]))
    for group in plan_groups(["cpu", "requests"]):
        train_group(group, workspace, models, CONFIG, history="3D", validation="12h")
    RawStore(workspace / STORE).append(long_points(series.iloc[800:]))
    outside = shutil.copytree(models / "cpu" / "versions" / "000001", tmp_path / "evil")
    (models / "cpu" / "aliases.json").write_text(json.dumps({"production": f"../../../{outside.name}"}))
    (models / "cpu" / "alias-history.json").unlink()
    before = snapshot(models)

    state = score_flow(str(workspace), str(models), report=False, return_state=True)
    results = {r["group"]: r for r in state.result(raise_on_failure=False)}
    assert results["requests"]["status"] == "scored" and results["requests"]["points"] > 0
    assert results["cpu"]["status"] == "failed", results["cpu"]
    message = results["cpu"]["message"]
    assert message.startswith("RegistryError:") and "aliases.json" in message and "../../../evil" in message, message
    assert "\n" not in message
    assert snapshot(models) == before
