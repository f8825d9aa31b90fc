"""Helpers of the end-to-end pipeline tests: workspaces over the sample world, damaged inputs,
``python -m pipeline`` in a subprocess, and store fingerprints (file and chip hashes)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from rasterio.errors import NotGeoreferencedWarning

from catalogs.store_format import IMAGE, ITEM_ID, open_store, read_manifest

REPO = Path(__file__).resolve().parents[1]
WORLD = "world"  # the sample world's folder (or link) inside a workspace
PARAMS = "params.yaml"
STORE = "geopile2.zarr"
WORK = "work"
REPORTS = "reports"

# A small but busy build: every pretraining source, small chips at a short stride (~200 chips
# per sensor), batches of 2 items on average (~20 chip files) and small shards (~60 shard
# files), so coregister and shard take long enough to be interrupted many times, while the
# whole build stays a few seconds.
BUSY_BUILD: dict[str, Any] = {
    "collections": ["sen12ms", "mdas", "millionaid", "geopile"],
    "coregister": {
        "sources": {
            "sen12ms": {"reference": "s2", "chip_px": 64, "stride_px": 32},
            "mdas": {"reference": "rgb", "chip_px": 64, "stride_px": 32},
        },
        "batch_items": 2,
    },
    "pictures": {"chip_px": 64},
    "shard": {"chips_per_shard": 16},
}
# The paired sources at the repository's chip grid (params.yaml): one chip per SEN12MS item,
# four per MDAS item.
PAIRED_BUILD: dict[str, Any] = {
    "collections": ["sen12ms", "mdas"],
    "coregister": {
        "sources": {
            "sen12ms": {"reference": "s2", "chip_px": 256, "stride_px": 256},
            "mdas": {"reference": "rgb", "chip_px": 256, "stride_px": 128},
        }
    },
    "shard": {"chips_per_shard": 4},
}


def make_workspace(
    folder: Path, world: Path, build: dict[str, Any], copy_world: bool = False
) -> Path:
    """A folder to run the pipeline in: ``world`` (the sample world, linked or copied) and a
    ``params.yaml`` whose ``pipeline`` section is ``build`` with paths relative to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if copy_world:
        shutil.copytree(world, folder / WORLD)
    else:
        (folder / WORLD).symlink_to(world, target_is_directory=True)
    pipeline = {
        "catalog": f"{WORLD}/catalog.json",
        "work_dir": WORK,
        "store": STORE,
        "reports_dir": REPORTS,
        "workers": 0,
        **build,
    }
    (folder / PARAMS).write_text(yaml.safe_dump({"pipeline": pipeline}, sort_keys=False))
    return folder


def pipeline_command(stage: str = "run", workers: int = 0) -> list[str]:
    """``python -m pipeline <stage>`` over the workspace's params.yaml."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        stage,
        "--params",
        PARAMS,
        "--workers",
        str(workers),
        "--quiet",
    ]


def subprocess_env() -> dict[str, str]:
    """The environment of a pipeline subprocess: this repository importable, output unbuffered."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
        "PYTHONUNBUFFERED": "1",
    }


def run_pipeline(
    folder: Path, stage: str = "run", workers: int = 0, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one stage (or all) in ``folder`` to the end."""
    return subprocess.run(
        pipeline_command(stage, workers),
        cwd=folder,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def run_ok(folder: Path, stage: str = "run", workers: int = 0) -> str:
    done = run_pipeline(folder, stage, workers)
    assert done.returncode == 0, f"pipeline {stage} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# --- what a build produced -------------------------------------------------------------------


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by path relative to it."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def chip_hashes(store: Path) -> dict[str, list[str]]:
    """Per sensor, the SHA-256 of each chip of ``image``, in store order."""
    root = open_store(store)
    return {
        name: [
            hashlib.sha256(np.ascontiguousarray(chip).tobytes()).hexdigest()
            for chip in root[name][IMAGE][:]
        ]
        for name in read_manifest(store).sensors
    }


def images(store: Path) -> dict[str, np.ndarray]:
    """Every sensor's ``image`` array, read whole."""
    root = open_store(store)
    return {name: root[name][IMAGE][:] for name in read_manifest(store).sensors}


def item_ids(store: Path) -> dict[str, set[str]]:
    """Per sensor, the catalog items its chips come from."""
    root = open_store(store)
    return {name: {str(v) for v in root[name][ITEM_ID][:]} for name in read_manifest(store).sensors}


def chip_counts(store: Path) -> dict[str, int]:
    return {name: s.chip_count for name, s in read_manifest(store).sensors.items()}


def assert_same_images(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Chip by chip, bit for bit (NaN nodata equal to NaN)."""
    assert list(actual) == list(expected)
    for name, chips in expected.items():
        assert actual[name].shape == chips.shape and actual[name].dtype == chips.dtype, name
        for index, (got, want) in enumerate(zip(actual[name], chips, strict=True)):
            assert np.array_equal(got, want, equal_nan=chips.dtype.kind == "f"), (
                f"{name} chip {index} differs"
            )


# --- damaging the sample world ---------------------------------------------------------------


def multihash(path: Path) -> str:
    """The ``file:checksum`` of a file: a sha2-256 multihash in hex, as the catalogs write it."""
    return "1220" + hashlib.sha256(path.read_bytes()).hexdigest()


def item_path(world: Path, collection: str, item_id: str) -> Path:
    return world / collection / item_id / f"{item_id}.json"


def asset_path(world: Path, collection: str, item_id: str, key: str) -> Path:
    """The file of one asset, as the catalog points at it (absolute, normalised)."""
    item_file = item_path(world, collection, item_id)
    href = json.loads(item_file.read_text())["assets"][key]["href"]
    return Path(os.path.normpath(item_file.parent / href))


def clone_item(
    world: Path, collection: str, item_id: str, new_id: str, own_files: Sequence[str]
) -> Path:
    """Add a copy of an item to its collection under ``new_id``; the assets ``own_files``
    get copies of their files (``raw/<collection>/clones/<new_id>_<key><suffix>``) that can
    be damaged without touching the original item. Returns the new item's JSON file."""
    item = json.loads(item_path(world, collection, item_id).read_text())
    item["id"] = new_id
    for key in own_files:
        source = asset_path(world, collection, item_id, key)
        copy = world / "raw" / collection / "clones" / f"{new_id}_{key}{source.suffix}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
        item["assets"][key]["href"] = f"../../raw/{collection}/clones/{copy.name}"
    target = item_path(world, collection, new_id)
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(item, indent=2))
    collection_file = world / collection / "collection.json"
    document = json.loads(collection_file.read_text())
    document["links"].append(
        {"rel": "item", "href": f"./{new_id}/{new_id}.json", "type": "application/geo+json"}
    )
    collection_file.write_text(json.dumps(document, indent=2))
    return target


def describe_file(world: Path, collection: str, item_id: str, key: str) -> None:
    """Make the item's ``file:checksum`` and ``file:size`` describe its (damaged) file as it is
    now: a catalog that correctly describes a bad file, so fetch passes it on."""
    item_file = item_path(world, collection, item_id)
    item = json.loads(item_file.read_text())
    path = asset_path(world, collection, item_id, key)
    item["assets"][key]["file:checksum"] = multihash(path)
    item["assets"][key]["file:size"] = path.stat().st_size
    item_file.write_text(json.dumps(item, indent=2))


def rewrite_raster(
    path: Path,
    *,
    crs: Any = "keep",
    transform: Any = "keep",
    bands: int | None = None,
    fill: float | None = None,
    holes: float | None = None,
) -> None:
    """Write ``path`` again as a plain GeoTIFF: without CRS (``crs=None``), without
    geotransform (``transform=None``), with only its first ``bands`` bands, every pixel
    ``fill``, or every 7th pixel of every 7th row ``holes``."""
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    if bands is not None:
        data = data[:bands]
    if fill is not None:
        data = np.full_like(data, fill)
    if holes is not None:
        data[:, ::7, ::7] = holes
    profile.update(driver="GTiff", count=data.shape[0])
    for key in ("tiled", "blockxsize", "blockysize", "copy_src_overviews", "interleave"):
        profile.pop(key, None)
    if crs is None:
        profile.pop("crs", None)
    if transform is None:
        profile.pop("transform", None)
    path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)


# --- timed runs and the shared reference build -----------------------------------------------

STAGE_NAMES = ("discover", "fetch", "coregister", "shard", "validate")


def stages_done(log: str) -> list[str]:
    """The stages a ``python -m pipeline run`` log reports finished (``<stage>: <s> s -> ...``)."""
    done = []
    for line in log.splitlines():
        name, _, rest = line.partition(": ")
        if name in STAGE_NAMES and " s -> " in rest:
            done.append(name)
    return done


def stage_running(log: str) -> str | None:
    """The stage a run was in when its log ends: the first not reported finished."""
    done = stages_done(log)
    return next((name for name in STAGE_NAMES if name not in done), None)


@dataclass(frozen=True)
class Build:
    """An uninterrupted build: its workspace and when each stage ended (s after the start)."""

    folder: Path
    stage_end_s: dict[str, float]

    @property
    def store(self) -> Path:
        return self.folder / STORE


def timed_build(folder: Path, workers: int = 0, timeout_s: float = 300) -> Build:
    """Run ``python -m pipeline run`` to the end, noting when each stage's line appears."""
    log_path = folder / f"run-{time.monotonic_ns()}.log"
    ends: dict[str, float] = {}
    with open(log_path, "w") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            pipeline_command("run", workers),
            cwd=folder,
            env=subprocess_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while process.poll() is None:
            for name in stages_done(log_path.read_text()):
                ends.setdefault(name, time.monotonic() - start)
            assert time.monotonic() - start < timeout_s, "pipeline run timed out"
            time.sleep(0.01)
    text = log_path.read_text()
    assert process.returncode == 0, f"pipeline run failed:\n{text}"
    for name in stages_done(text):
        ends.setdefault(name, time.monotonic() - start)
    return Build(folder, ends)


_BUSY_BUILDS: dict[Path, Build] = {}


def busy_reference(tmp_path_factory: Any, world: Path) -> Build:
    """The uninterrupted single-process build of :data:`BUSY_BUILD`, made once per session
    (shared by the tests of several modules)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _BUSY_BUILDS:
        folder = make_workspace(tmp_path_factory.mktemp("busy") / "reference", world, BUSY_BUILD)
        _BUSY_BUILDS[key] = timed_build(folder, workers=0)
    return _BUSY_BUILDS[key]
