"""The model registry: atomic publish, no lost updates, verified loads, aliases, pruning."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import anomaly.ops.registry as registry_module
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.errors import ModelFileError
from anomaly.core.persistence import FORMAT_VERSION
from anomaly.ops.registry import (
    ModelRegistry,
    RegistryError,
    check_name,
    check_version,
    resolve_root,
    verify_manifest,
)
from tests.conftest import CHILD_ENV, REPO, TINY, dead_pid, kill_when_stalled

# One torch thread: the box has two cores shared with other work, and spinning
# thread pools make tiny models crawl when a core is busy.
CONFIG = TINY.replace(training={"num_threads": 1})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERSION_FILES = {
    "manifest.json", "metadata.json", "config.json", "weights.pt",
    "scaler.json", "detector.json", "history.json", "residuals.npz", "training.png",
}  # fmt: skip


@pytest.fixture(scope="module")
def fitted(two_metrics: pd.DataFrame) -> LSTMAutoencoderDetector:
    """The one detector this module trains; every test publishes it as often as it likes."""
    return LSTMAutoencoderDetector(CONFIG).fit(two_metrics.iloc[:800], progress=False)


@pytest.fixture(scope="module")
def saved_model(fitted: LSTMAutoencoderDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fitted detector as a plain folder, for child processes to load."""
    return fitted.save(tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture(scope="module")
def template(fitted: LSTMAutoencoderDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with versions 000001..000003 of model 'm' and no aliases (copied, never changed)."""
    root = tmp_path_factory.mktemp("template") / "registry"
    registry = ModelRegistry(root)
    for i in range(3):
        registry.publish(fitted, "m", run_id=f"template-{i + 1}")
    return root


@pytest.fixture
def registry(template: Path, tmp_path: Path) -> ModelRegistry:
    """A private copy of the three-version template registry."""
    return ModelRegistry(shutil.copytree(template, tmp_path / "registry"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _staging_folders(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".staging-"))



# -- 1. atomic publish, with a writer killed mid-write ---------------------------------

KILLED_WRITER = """
import sys, time
from pathlib import Path

import anomaly.core.persistence as persistence
import anomaly.ops.registry as registry
from anomaly.core.detector import LSTMAutoencoderDetector

model, root, point, marker = sys.argv[1:5]
detector = LSTMAutoencoderDetector.load(model)


def stall(original, run_first):
    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs) if run_first else None
        Path(marker).write_text("stalled")
        time.sleep(300)
        return result
    return wrapper


if point == "model-files":  # config/scaler/detector/history written, weights.pt not yet
    persistence.torch.save = stall(persistence.torch.save, run_first=False)
elif point == "before-rename":  # every file written and fsynced, the rename not done
    registry.fsync_tree = stall(registry.fsync_tree, run_first=True)
elif point == "holding-lock":  # under the lock, number picked, not renamed
    registry.ModelRegistry._next_version = stall(registry.ModelRegistry._next_version, run_first=True)
else:
    raise SystemExit(f"unknown point {point}")
registry.ModelRegistry(root).publish(detector, "m", run_id="killed")
print("published; should have been killed", flush=True)
"""


def _start_and_kill(saved_model: Path, root: Path, point: str, marker: Path) -> int:
    """Run a publishing child, SIGKILL it once it stalls at ``point``; return its (now dead) pid."""
    return kill_when_stalled(KILLED_WRITER, [str(saved_model), str(root), point, str(marker)], marker, point)


@pytest.mark.parametrize(
    ("point", "expected_in_staging", "absent_from_staging"),
    [
        ("model-files", {"config.json", "scaler.json", "detector.json", "history.json"}, {"weights.pt", "manifest.json"}),
        ("before-rename", VERSION_FILES, set()),
        ("holding-lock", VERSION_FILES, set()),
    ],
)
def test_a_writer_killed_mid_publish_leaves_no_partial_version(
    fitted: LSTMAutoencoderDetector,
    saved_model: Path,
    tmp_path: Path,
    point: str,
    expected_in_staging: set[str],
    absent_from_staging: set[str],
) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    registry.publish(fitted, "m", run_id="before")

    pid = _start_and_kill(saved_model, root, point, tmp_path / "stalled")

    assert registry.versions("m") == ["000001"], "the killed writer's version must not be listed"
    for version in registry.versions("m"):
        registry.verify("m", version)
    assert registry.get("m", "000001").metadata["run_id"] == "before"
    left = _staging_folders(root / "m")
    assert len(left) == 1 and left[0].startswith(f".staging-{pid}-"), left
    contents = {p.name for p in (root / "m" / left[0]).iterdir()}
    assert expected_in_staging <= contents and not (absent_from_staging & contents), contents

    started = time.monotonic()
    new = registry.publish(fitted, "m", run_id="after")
    assert time.monotonic() - started < 30, "a lock held by a killed process must be released"
    assert _staging_folders(root / "m") == [], "the dead writer's staging folder is removed by the next publish"
    assert new.version == "000002" and registry.versions("m") == ["000001", "000002"]
    assert {p.name for p in new.path.iterdir()} == VERSION_FILES
    registry.verify("m", "000002")
    assert registry.load("m", "000002").version.metadata["run_id"] == "after"


def test_staging_folders_of_live_processes_are_kept(
    fitted: LSTMAutoencoderDetector, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    registry.publish(fitted, "m")
    model_dir = root / "m"
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=CHILD_ENV)
    try:
        folders = {
            "mine": f".staging-{os.getpid()}-x",
            "live": f".staging-{live.pid}-y",
            "dead": f".staging-{dead}-z",
            "trash": f".trash-{dead}-w",
        }
        for name in folders.values():
            (model_dir / name).mkdir()
            (model_dir / name / "config.json").write_text("{}")

        registry.publish(fitted, "m")
        present = {p.name for p in model_dir.iterdir()}
        assert folders["mine"] in present and folders["live"] in present, "a live writer's staging was removed"
        assert folders["dead"] not in present and folders["trash"] not in present
        assert (model_dir / folders["live"] / "config.json").read_text() == "{}", "nor emptied"

        live.kill()
        live.wait()
        registry.publish(fitted, "m")
        present = {p.name for p in model_dir.iterdir()}
        assert folders["live"] not in present, "once its writer is gone it is cleaned up"
        assert folders["mine"] in present
        assert registry.versions("m") == ["000001", "000002", "000003"]
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()


# -- 2. concurrent training runs of the same name ----------------------------------------

CONCURRENT_WRITER = """
import sys, time
from pathlib import Path

from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.ops.registry import ModelRegistry

model, root, k, go = sys.argv[1:5]
detector = LSTMAutoencoderDetector.load(model)
registry = ModelRegistry(root)
Path(f"{go}.ready{k}").touch()
while not Path(go).exists():
    time.sleep(0.005)
for i in range(3):
    run_id = f"proc{k}-run{i}"
    version = registry.publish(detector, "m", run_id=run_id).version
    registry.promote("m", version, f"p{k}")
    registry.promote("m", version, "production")
    print("published", version, run_id, flush=True)
print("rolled back to", registry.rollback("m"), flush=True)
"""


def test_concurrent_publishers_get_distinct_consecutive_versions_and_keep_their_aliases(
    saved_model: Path, tmp_path: Path
) -> None:
    root, go = tmp_path / "registry", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(saved_model), str(root), str(k), str(go)],
            cwd=REPO, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for k in range(4)
    ]
    reads = 0
    try:
        deadline = time.monotonic() + 120
        while not all(Path(f"{go}.ready{k}").exists() for k in range(4)):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            assert time.monotonic() < deadline, "children never got ready"
            time.sleep(0.02)
        go.touch()  # all four publish at once
        # Meanwhile, readers must always see complete alias files.
        while any(p.poll() is None for p in procs):
            for name in ("aliases.json", "alias-history.json"):
                path = root / "m" / name
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    continue
                json.loads(text)
                reads += 1
            time.sleep(0.002)
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    assert reads > 0

    registry = ModelRegistry(root)
    assert registry.versions("m") == [f"{i:06d}" for i in range(1, 13)]
    printed: dict[str, str] = {}
    last: dict[str, str] = {}
    for k, (out, _) in enumerate(outputs):
        lines = [line.split() for line in out.splitlines() if line.startswith("published")]
        assert len(lines) == 3, out
        for _, version, run_id in lines:
            assert version not in printed, f"{version} handed out twice"
            printed[version] = run_id
        last[f"p{k}"] = lines[-1][1]
        assert "rolled back to" in out
    assert sorted(printed) == registry.versions("m")
    for version, run_id in printed.items():
        registry.verify("m", version)
        assert registry.get("m", version).metadata["run_id"] == run_id, f"{version} was overwritten"
    assert len({registry.get("m", v).metadata["run_id"] for v in printed}) == 12

    aliases = json.loads((root / "m" / "aliases.json").read_text())
    history = json.loads((root / "m" / "alias-history.json").read_text())
    for alias, version in last.items():
        assert aliases[alias] == version, f"update of alias {alias} was lost"
    assert aliases["production"] in printed
    assert history["production"][-1] == aliases["production"]
    assert set(history) == {"p0", "p1", "p2", "p3", "production"}
    assert _staging_folders(root / "m") == []
    assert not [p.name for p in (root / "m").iterdir() if p.name.startswith(".aliases")], "temporary alias files left"


# -- 3, 4, 7. loading verifies the manifest, unpickles nothing, refuses newer formats ------


def _damage(path: Path, how: str) -> None:
    if how == "flip a byte":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    else:
        path.unlink()


@pytest.mark.parametrize(
    ("file", "how", "message"),
    [
        ("weights.pt", "flip a byte", r"weights\.pt' does not match its sha256 in manifest\.json"),
        ("config.json", "truncate", r"config\.json' has \d+ bytes, the manifest says \d+: truncated"),
        ("scaler.json", "delete", r"scaler\.json' is missing \(listed in manifest\.json\)"),
    ],
)
def test_a_damaged_file_is_named_before_anything_is_loaded(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, file: str, how: str, message: str
) -> None:
    folder = registry.path("m", "000002")
    _damage(folder / file, how)
    loaded: list[object] = []
    monkeypatch.setattr("anomaly.core.detector.read_model", lambda path: loaded.append(path))
    monkeypatch.setattr("anomaly.core.persistence.torch.load", lambda *a, **k: loaded.append(a))
    with pytest.raises(ModelFileError, match=message):
        registry.verify("m", "000002")
    with pytest.raises(ModelFileError, match=message):
        registry.load("m", "000002")
    assert loaded == [], "verification must fail before any file is loaded"
    registry.verify("m", "000001")  # the other versions are untouched


def test_a_folder_without_manifest_is_refused(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (registry.path("m", "000003") / "manifest.json").unlink()
    loaded: list[object] = []
    monkeypatch.setattr("anomaly.core.detector.read_model", lambda path: loaded.append(path))
    with pytest.raises(ModelFileError, match=r"has no manifest\.json: it is incomplete"):
        registry.load("m", "000003")
    assert loaded == []
    plain = fitted.save(tmp_path / "plain")  # a complete model, but not a registry version
    with pytest.raises(ModelFileError, match=r"has no manifest\.json"):
        verify_manifest(plain)


def test_a_manifest_that_is_not_an_object_is_a_model_file_error(registry: ModelRegistry) -> None:
    (registry.path("m", "000001") / "manifest.json").write_text("[]\n")
    with pytest.raises(ModelFileError, match=r"manifest\.json"):
        registry.load("m", "000001")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_are_never_unpickled_even_with_a_matching_manifest(registry: ModelRegistry, tmp_path: Path) -> None:
    folder = registry.path("m", "000001")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    weights = folder / "weights.pt"
    weights.write_bytes(pickle.dumps(Exploit()))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["weights.pt"] = {"sha256": _sha256(weights), "size": weights.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    registry.verify("m", "000001")  # the attacker's manifest does match

    with pytest.raises(ModelFileError, match=r"cannot load weights from .*weights\.pt"):
        registry.load("m", "000001")
    assert not marker.exists(), "loading ran code from the weights file"


def test_a_newer_manifest_format_is_refused(registry: ModelRegistry) -> None:
    path = registry.path("m", "000002") / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    newer = rf"registry format {FORMAT_VERSION + 1}, newer than this version of the library"
    with pytest.raises(ModelFileError, match=newer):
        registry.verify("m", "000002")
    with pytest.raises(ModelFileError, match="upgrade the anomaly package"):
        registry.load("m", "000002")


# -- 5. names and versions validated ---------------------------------------------------

BAD_NAMES = ["../x", "a/b", "/abs", "..", "a..b", "", ".hidden", "a" * 101, "a\\b", "-dash", "m\n", "a b"]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
def test_bad_names_are_rejected_everywhere_and_create_nothing(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector, bad: str
) -> None:
    before = sorted(p.relative_to(registry.root.parent) for p in registry.root.parent.rglob("*"))
    named = re.escape(repr(bad))
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        check_name(bad)
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        registry.publish(fitted, bad)
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        registry.load(bad)
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        registry.promote(bad, "000001")
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        registry.rollback(bad)
    with pytest.raises(RegistryError, match=f"invalid model name {named}"):
        registry.prune(bad, 1)
    with pytest.raises(RegistryError, match=f"invalid alias {named}"):
        registry.promote("m", "000001", alias=bad)
    with pytest.raises(RegistryError, match=f"invalid alias {named}"):
        registry.resolve("m", alias=bad)
    after = sorted(p.relative_to(registry.root.parent) for p in registry.root.parent.rglob("*"))
    assert after == before, "a rejected name created something"
    assert not Path("/abs").exists()
    assert registry.aliases("m") == {}


def test_names_at_the_limits_are_accepted(registry: ModelRegistry, fitted: LSTMAutoencoderDetector) -> None:
    for good in ("a" * 100, "checkout-api_v2.1", "9"):
        assert check_name(good) == good
    assert registry.publish(fitted, "a" * 100).path == registry.root / ("a" * 100) / "versions" / "000001"


@pytest.mark.parametrize("bad", ["1", "abc", "../000001", "0000001", "00001", 0, -1, "000001\n", True])
def test_bad_versions_are_rejected(registry: ModelRegistry, bad: object) -> None:
    named = re.escape(repr(bad))
    with pytest.raises(RegistryError, match=f"invalid version {named}: expected six digits"):
        check_version(bad)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=f"invalid version {named}"):
        registry.load("m", bad)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=f"invalid version {named}"):
        registry.promote("m", bad)  # type: ignore[arg-type]
    assert registry.aliases("m") == {}


def test_an_int_version_is_padded(registry: ModelRegistry) -> None:
    assert check_version(3) == "000003" and check_version(42) == "000042"
    assert registry.resolve("m", 3) == "000003"
    assert registry.load("m", 3).version.version == "000003"
    assert registry.promote("m", 2) == "000002"
    assert registry.aliases("m") == {"production": "000002"}


def test_unknown_names_versions_and_aliases_list_what_exists(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match=r"no model named 'nope' in registry .*; models: m$"):
        registry.load("nope")
    with pytest.raises(RegistryError, match=r"has no version 000009; versions: 000001, 000002, 000003$"):
        registry.load("m", "000009")
    with pytest.raises(RegistryError, match=r"has no version 000009; versions: 000001, 000002, 000003$"):
        registry.promote("m", 9)
    with pytest.raises(RegistryError, match=r"has no alias 'production'; aliases: none$"):
        registry.load("m", alias="production")
    registry.promote("m", 1)
    with pytest.raises(RegistryError, match=r"has no alias 'staging'; aliases: production$"):
        registry.load("m", alias="staging")
    empty = ModelRegistry(registry.root.parent / "empty")
    with pytest.raises(RegistryError, match=r"no model named 'm' in registry .*; models: none$"):
        empty.load("m")


# -- 6. round trip across processes ----------------------------------------------------

ROUND_TRIP_CHILD = """
import json, sys
from anomaly.core.config import DetectorConfig
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.ops.registry import ModelRegistry

config, root, history, new, out = sys.argv[1:6]
detector = LSTMAutoencoderDetector(DetectorConfig.from_dict(json.load(open(config)))).fit(history, progress=False)
version = ModelRegistry(root).publish(detector, "rt", run_id="child").version
scores = detector.score(new, context=history)
scores.to_frame().to_csv(out)
print(version, repr(detector.threshold_))
"""


def test_a_version_published_in_another_process_scores_identically(
    two_metrics: pd.DataFrame, tmp_path: Path
) -> None:
    config, history, new, out = tmp_path / "config.json", tmp_path / "history.csv", tmp_path / "new.csv", tmp_path / "child.csv"
    config.write_text(json.dumps(CONFIG.to_dict()))
    two_metrics.iloc[:600].to_csv(history, index_label="timestamp")
    two_metrics.iloc[600:800].to_csv(new, index_label="timestamp")
    root = tmp_path / "registry"
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP_CHILD, str(config), str(root), str(history), str(new), str(out)],
        cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    version, threshold = done.stdout.split()

    loaded = ModelRegistry(root).load("rt", version)
    assert loaded.version.metadata["run_id"] == "child"
    assert loaded.detector.threshold_ == float(threshold)
    mine = loaded.detector.score(new, context=history).to_frame()
    theirs = pd.read_csv(out, index_col=0)  # shortest repr, read back exactly
    assert len(theirs) == len(mine) == 200
    for column in ("anomaly_score", "score_requests", "score_cpu"):
        np.testing.assert_array_equal(mine[column].to_numpy(), theirs[column].to_numpy(), err_msg=column)
    np.testing.assert_array_equal(mine["flag"].to_numpy(), theirs["flag"].to_numpy())


# -- 8. aliases, rollback, prune, root -------------------------------------------------


def test_resolve_order_version_then_alias_then_production_then_latest(registry: ModelRegistry) -> None:
    assert registry.resolve("m") == "000003", "no aliases: the latest"
    registry.promote("m", "000002", alias="staging")
    assert registry.resolve("m") == "000003", "an alias other than production does not change the default"
    registry.promote("m", "000001")
    assert registry.resolve("m") == "000001", "production before latest"
    assert registry.resolve("m", alias="staging") == "000002", "an explicit alias before production"
    assert registry.resolve("m", version="000003", alias="staging") == "000003", "an explicit version first"
    assert registry.load("m").version.version == "000001"
    assert registry.load("m", alias="staging").version.version == "000002"


def test_promote_twice_then_rollback(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="alias 'production' of model 'm' has no earlier version to roll back to"):
        registry.rollback("m")
    assert registry.promote("m", "000001") == "000001"
    with pytest.raises(RegistryError, match="has no earlier version to roll back to"):
        registry.rollback("m")
    assert registry.promote("m", "000003") == "000003"
    assert registry.aliases("m") == {"production": "000003"}
    assert registry.rollback("m") == "000001"
    assert registry.aliases("m") == {"production": "000001"}
    assert registry.resolve("m") == "000001"
    with pytest.raises(RegistryError, match="has no earlier version to roll back to"):
        registry.rollback("m")
    assert registry.aliases("m") == {"production": "000001"}, "a refused rollback changes nothing"
    with pytest.raises(RegistryError, match="alias 'staging' of model 'm' has no earlier version"):
        registry.rollback("m", alias="staging")


def test_promoting_the_current_target_again_keeps_rollback_meaningful(registry: ModelRegistry) -> None:
    registry.promote("m", 1)
    registry.promote("m", 2)
    registry.promote("m", 2)  # no-op
    assert registry.rollback("m") == "000001"


def test_prune_keeps_the_newest_and_every_aliased_version(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector
) -> None:
    registry.publish(fitted, "m")
    registry.publish(fitted, "m")  # 000001..000005
    registry.promote("m", 1, alias="staging")
    registry.promote("m", 2)
    assert registry.prune("m", keep=2) == ["000003"]
    assert registry.versions("m") == ["000001", "000002", "000004", "000005"]
    model_dir = registry.root / "m"
    assert not (model_dir / "versions" / "000003").exists()
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".trash-")], "pruned version not gone whole"
    for version in registry.versions("m"):
        registry.verify("m", version)
    assert registry.prune("m", keep=2) == [], "nothing more to remove"
    assert registry.prune("m", keep=0) == ["000004", "000005"]
    assert registry.versions("m") == ["000001", "000002"]
    assert registry.aliases("m") == {"staging": "000001", "production": "000002"}


@pytest.mark.parametrize("keep", [-1, "2", 1.5, True])
def test_prune_keep_must_be_a_non_negative_int(registry: ModelRegistry, keep: object) -> None:
    with pytest.raises(RegistryError, match=f"keep must be an integer >= 0, got {re.escape(repr(keep))}"):
        registry.prune("m", keep)  # type: ignore[arg-type]
    assert registry.versions("m") == ["000001", "000002", "000003"]


def test_rollback_to_a_pruned_version_is_refused(registry: ModelRegistry) -> None:
    registry.promote("m", 1)
    registry.promote("m", 2)
    assert registry.prune("m", keep=0) == ["000001", "000003"]
    with pytest.raises(RegistryError, match=r"cannot roll 'production' of 'm' back to 000001: that version was pruned"):
        registry.rollback("m")
    assert registry.aliases("m") == {"production": "000002"}


def test_a_pruned_version_number_is_never_given_to_a_new_model(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector
) -> None:
    """Otherwise 'm 000003' in last week's events.csv, or in alias history, names another model."""
    registry.promote("m", 3)
    registry.promote("m", 2)  # production history: 000003 then 000002
    removed = registry.prune("m", keep=0)
    assert removed == ["000001", "000003"]
    new = registry.publish(fitted, "m", run_id="after-prune")
    assert new.version not in removed, f"pruned version number {new.version} was reused for a new model"
    with pytest.raises(RegistryError, match="that version was pruned"):
        registry.rollback("m")


def test_resolve_root_argument_then_environment_then_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANOMALY_REGISTRY", raising=False)
    assert resolve_root() == Path("models")
    assert ModelRegistry().root == Path("models")
    monkeypatch.setenv("ANOMALY_REGISTRY", str(tmp_path / "from-env"))
    assert resolve_root() == tmp_path / "from-env"
    assert ModelRegistry().root == tmp_path / "from-env"
    assert resolve_root(tmp_path / "given") == tmp_path / "given"
    assert ModelRegistry(str(tmp_path / "given")).root == tmp_path / "given"
    monkeypatch.setenv("ANOMALY_REGISTRY", "")
    assert resolve_root() == Path("models")


# -- 9. what a version holds ----------------------------------------------------------


def test_a_version_holds_every_file_and_a_complete_manifest(registry: ModelRegistry) -> None:
    folder = registry.path("m", "000001")
    assert {p.name for p in folder.iterdir()} == VERSION_FILES
    assert (folder / "training.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (folder / "training.png").stat().st_size > 1000
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) == VERSION_FILES - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry == {"sha256": _sha256(folder / name), "size": (folder / name).stat().st_size}, name


def test_metadata_says_what_when_and_with_what(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    before = datetime.now(timezone.utc)
    published = registry.publish(fitted, "m", evaluation={"f1": 0.9})
    meta = json.loads((published.path / "metadata.json").read_text())
    assert meta == published.metadata

    created = datetime.fromisoformat(meta["created_at"])
    assert created.tzinfo is not None and before - timedelta(seconds=1) <= created <= datetime.now(timezone.utc)
    assert re.fullmatch(r"[0-9a-f]{32}", meta["run_id"])
    assert meta["name"] == "m"
    data = meta["data"]
    assert data["start"] == two_metrics.index[0].isoformat() == "2026-01-05T00:00:00+00:00"
    assert data["end"] == two_metrics.index[799].isoformat()
    assert data["rows"] == 800
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"])
    assert meta["metrics"] == ["requests", "cpu"]
    assert meta["freq_seconds"] == 300.0
    assert meta["threshold"]["method"] == CONFIG.threshold.method
    assert meta["threshold"]["combined"] == fitted.threshold_
    assert meta["threshold"]["per_metric"] == {m: t.threshold_ for m, t in fitted.thresholds_.per_metric.items()}
    training = meta["training"]
    assert training["epochs_run"] == len(fitted.history_.train_loss) >= 1
    assert training["final_train_loss"] == fitted.history_.train_loss[-1]
    assert training["best_val_loss"] == min(v for v in fitted.history_.val_loss if v is not None)
    assert training["best_epoch"] == fitted.history_.best_epoch
    for library in ("torch", "numpy", "pandas"):
        assert meta["versions"][library] == importlib_metadata.version(library)
    assert meta["evaluation"] == {"f1": 0.9}
    assert "parent_version" in meta and meta["parent_version"] is None, "no production version yet"

    other = registry.publish(fitted, "m")
    assert other.metadata["run_id"] != meta["run_id"]
    assert registry.publish(fitted, "m", run_id="given", parent="000002").metadata["parent_version"] == "000002"
    registry.promote("m", 3)
    assert registry.publish(fitted, "m", run_id="next").metadata["parent_version"] == "000003"


def test_the_data_fingerprint_follows_the_data_only(
    registry: ModelRegistry, fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    quick = CONFIG.replace(training={"epochs": 1})
    data = two_metrics.iloc[:800]
    changed = data.copy()
    changed.iloc[400, 1] += 0.001
    same = registry.publish(LSTMAutoencoderDetector(quick).fit(data.copy(), progress=False), "m")
    shuffled = registry.publish(LSTMAutoencoderDetector(quick).fit(data.sample(frac=1, random_state=0), progress=False), "m")
    other = registry.publish(LSTMAutoencoderDetector(quick).fit(changed, progress=False), "m")
    reference = registry.get("m", "000001").metadata["data"]["sha256"]
    assert same.metadata["data"]["sha256"] == reference, "same data, another fit: same fingerprint"
    assert shuffled.metadata["data"]["sha256"] == reference, "row order does not matter"
    assert other.metadata["data"]["sha256"] != reference, "one value changed: another fingerprint"
    assert other.metadata["data"]["rows"] == 800
