"""The validate stage: re-open the store, check it, and write the reports.

The store is checked against what the stages recorded and every chip's checksum verified; the
reports are ``reports/geopile2.json`` (DVC metrics) and a one-page ``reports/geopile2.md`` with
figures.

Each report file is written atomically (figures, then the page, then the metrics) and the metrics
are strict JSON: a value that cannot be measured (a QA shift on a scene without structure) is null
and counted apart, never NaN.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import xarray as xr  # noqa: E402

from catalogs.atomic_files import save_figure, write_json, write_text  # noqa: E402
from catalogs.sensors import Sensor, get_sensor  # noqa: E402
from catalogs.store_format import (  # noqa: E402
    IMAGE,
    IMAGE_CRC32C,
    INDEX_A,
    INDEX_B,
    PAIRS_GROUP,
    SENSOR_A,
    SENSOR_B,
    StoreManifest,
    open_store,
    read_manifest,
    shard_key,
)
from catalogs.store_shards import NOT_STORED, read_shard_file_index, verify_chunk  # noqa: E402
from pipeline.cluster import Executor  # noqa: E402
from pipeline.params import PipelineParams  # noqa: E402
from pipeline.stages import all_failures  # noqa: E402

SHIFT_PERCENTILES = (50, 90, 99)
VERIFY_SHARDS_PER_TASK = 16  # shard files whose chips one task verifies
THUMBNAIL_PAIRS = 4


class StoreValidationError(RuntimeError):
    """The store disagrees with the build's records; lists every disagreement."""


def check_store(
    params: PipelineParams, manifest: StoreManifest, executor: Executor | None = None
) -> list[str]:
    """Every disagreement between the store and the coregister summary and the registry.

    The chips' checksums are verified on ``executor``'s workers (this process without one).
    """
    summary = json.loads((params.work_dir / "coregister.json").read_text())
    root = open_store(params.store)
    problems = []
    # A sensor whose every chip was dropped (e.g. too much nodata) has no group in the store.
    chipped = sorted(name for name, count in summary["chips"].items() if count)
    if sorted(manifest.sensors) != chipped:
        problems.append(f"sensors {sorted(manifest.sensors)} != chipped {chipped}")
    for name, sensor in manifest.sensors.items():
        registry = get_sensor(name)
        image = root[name][IMAGE]
        expected = summary["chips"].get(name)
        if not (sensor.chip_count == image.shape[0] == expected):
            problems.append(
                f"{name}: {image.shape[0]} chips in the store, manifest says "
                f"{sensor.chip_count}, coregister made {expected}"
            )
        if str(image.dtype) != registry.dtype:
            problems.append(f"{name}: dtype {image.dtype}, registry says {registry.dtype}")
        if sensor.band_names != registry.band_names or image.shape[1] != registry.num_bands:
            problems.append(f"{name}: bands {sensor.band_names} != registry {registry.band_names}")
        if any(c == 0 for c in sensor.statistics.count):
            problems.append(f"{name}: a band has no valid value: counts {sensor.statistics.count}")
        dataset = xr.open_zarr(params.store, group=name)
        if dataset[IMAGE].dims != ("chip", "band", "y", "x"):
            problems.append(f"{name}: xarray sees dims {dataset[IMAGE].dims}")
    pairs = root[PAIRS_GROUP]
    for side_sensor, side_index in ((SENSOR_A, INDEX_A), (SENSOR_B, INDEX_B)):
        names, indices = pairs[side_sensor][:], pairs[side_index][:]
        for name in np.unique(names):
            count = manifest.sensors[str(name)].chip_count if name in manifest.sensors else 0
            bad = indices[names == name]
            if bad.size and (bad.min() < 0 or bad.max() >= count):
                problems.append(f"pairs: {side_index} of {name} outside 0..{count - 1}")
    if pairs[INDEX_A].shape[0] != manifest.pair_count:
        problems.append(
            f"pairs: {pairs[INDEX_A].shape[0]} rows, manifest says {manifest.pair_count}"
        )
    parts = [
        (name, shards[first : first + VERIFY_SHARDS_PER_TASK])
        for name in manifest.sensors
        for shards in [_shards(root[name][IMAGE])]
        for first in range(0, len(shards), VERIFY_SHARDS_PER_TASK)
    ]
    tasks = [(number, params.store, name, shards) for number, (name, shards) in enumerate(parts)]
    verified = dict((executor or Executor()).map_unordered(_verify_task, tasks))
    return problems + [line for number in sorted(verified) for line in verified[number]]


def _verify_task(task: tuple[int, Path, str, range]) -> tuple[int, list[str]]:
    """The task's number and :func:`verify_chips` of its shard files."""
    number, *arguments = task
    return number, verify_chips(*arguments)


def _shards(image: Any) -> range:
    """The shard indexes of a sensor's ``image`` array."""
    return range(-(-image.shape[0] // image.shards[0]))


def verify_chips(store: Path, sensor: str, shards: range | None = None) -> list[str]:
    """Every chip of ``sensor`` whose stored chunk is missing or fails its CRC32C check.

    Chips of the shard files ``shards``, default all, whose stored chunk is missing, or whose CRC32C
    differs from the one it carries or from its ``image_crc32c``: one line per chip naming the
    sensor, the chip and its shard file, and the reason.
    """
    group = open_store(store)[sensor]
    image = group[IMAGE]
    per_shard = image.shards[0]
    shards = _shards(image) if shards is None else shards
    if not shards:
        return []
    offset = shards[0] * per_shard  # only these shards' checksums are read
    checksums = group[IMAGE_CRC32C][offset : (shards[-1] + 1) * per_shard]
    problems = []
    for shard in shards:
        path = store / sensor / IMAGE / shard_key(image, shard)
        first = shard * per_shard
        expected = checksums[first - offset : first - offset + per_shard].tolist()
        try:
            damaged = _damaged_chunks(path, per_shard, expected)
        except (OSError, ValueError) as error:  # no file, or no readable index
            reason = error.strerror if isinstance(error, OSError) else str(error)
            damaged = dict.fromkeys(range(len(expected)), reason)
        problems += [
            f"{sensor} chip {first + slot}: {path}: {reason}" for slot, reason in damaged.items()
        ]
    return problems


def _damaged_chunks(path: Path, chips_per_shard: int, checksums: list[int]) -> dict[int, str]:
    """Slot -> reason, for each chunk of a shard file that is not stored or fails verification.

    ``checksums``: its chips' ``image_crc32c``; verification is
    :func:`~catalogs.store_shards.verify_chunk`.
    """
    damaged = {}
    with open(path, "rb") as f:
        index = read_shard_file_index(f.fileno(), chips_per_shard)
        for slot, expected in enumerate(checksums):
            offset, length = (int(v) for v in index[slot])
            try:
                if offset == NOT_STORED:
                    raise ValueError("the chunk is not stored in its shard")
                verify_chunk(os.pread(f.fileno(), length, offset), expected)
            except ValueError as error:
                damaged[slot] = str(error)
    return damaged


def _shift_table(params: PipelineParams) -> list[dict[str, str]]:
    with open(params.work_dir / "qa.csv", newline="") as f:
        return list(csv.DictReader(f))


def shift_summary(measured: np.ndarray, flag_px: float) -> dict[str, Any]:
    """Counts and percentiles of the QA's residual shifts (px).

    A NaN shift (a scene with no structure to measure on: level ground, water) is counted apart, not
    in the statistics.
    """
    shifts = measured[np.isfinite(measured)]
    qa: dict[str, Any] = {
        "pairs_measured": int(shifts.size),
        "pairs_without_structure": int(measured.size - shifts.size),
        "flagged": int((shifts > flag_px).sum()),
    }
    for q in SHIFT_PERCENTILES:
        qa[f"p{q}_px"] = round(float(np.percentile(shifts, q)), 4) if shifts.size else None
    qa["max_px"] = round(float(shifts.max()), 4) if shifts.size else None
    return qa


def build_metrics(params: PipelineParams, manifest: StoreManifest) -> dict[str, Any]:
    """The numbers of the build: items, chips per sensor, pairs, drops, failures, QA shifts."""
    summary = json.loads((params.work_dir / "coregister.json").read_text())
    qa = shift_summary(
        np.array([float(r["shift_px"]) for r in _shift_table(params)]),
        params.coregister.shift_flag_px,
    )
    failures = all_failures(params)
    return {
        "items": pq.read_metadata(params.items_table).num_rows,
        "locations": summary["locations"],
        "chips": {name: s.chip_count for name, s in manifest.sensors.items()},
        "pairs": manifest.pair_count,
        "dropped": summary["dropped"],
        "failures": dict(sorted(Counter(f.stage for f in failures).items())),
        # The kind of each reason: its text before any detail (": ..." or " (...)"), which
        # may name the file (e.g. GDAL's message of an unreadable GeoTIFF).
        "failure_reasons": dict(
            sorted(
                Counter(
                    re.split(r"[:(]", f.reason, maxsplit=1)[0].strip() for f in failures
                ).items()
            )
        ),
        "qa_shift": qa,
        "store_files": sum(1 for p in params.store.rglob("*") if p.is_file()),
        "store_mb": round(
            sum(p.stat().st_size for p in params.store.rglob("*") if p.is_file()) / 1e6, 3
        ),
    }


def _display(chip: np.ndarray, sensor: Sensor) -> tuple[np.ndarray, str | None]:
    """A chip as a picture.

    An RGB composite where the sensor has red/green/blue bands, else its first band (SAR: the first
    polarisation in dB; DSM: height) with a colour map.
    """
    names = [b.common_name for b in sensor.bands]
    if {"red", "green", "blue"} <= set(names):
        picture = np.stack([chip[names.index(c)] for c in ("red", "green", "blue")], axis=-1)
        cmap = None
    else:
        picture = chip[0]
        cmap = "gray" if sensor.kind == "sar" else "terrain"
    picture = picture.astype(np.float64)
    low, high = np.nanpercentile(picture, [2, 98])
    return np.clip((picture - low) / max(high - low, 1e-9), 0, 1), cmap


def _pairs_figure(params: PipelineParams, path: Path) -> Path:
    root = open_store(params.store)
    pairs = root[PAIRS_GROUP]
    count = pairs[INDEX_A].shape[0]
    rows = np.linspace(0, count - 1, min(THUMBNAIL_PAIRS, count)).astype(int) if count else []
    figure, axes = plt.subplots(
        max(len(rows), 1), 2, figsize=(6, 3 * max(len(rows), 1)), squeeze=False
    )
    for row, pair in enumerate(rows):
        for column, (s_key, i_key) in enumerate(((SENSOR_A, INDEX_A), (SENSOR_B, INDEX_B))):
            name, index = str(pairs[s_key][pair]), int(pairs[i_key][pair])
            picture, cmap = _display(root[name][IMAGE][index], get_sensor(name))
            axes[row, column].imshow(picture, cmap=cmap)
            axes[row, column].set_title(f"{name} #{index}", fontsize=8)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.tight_layout()
    return save_figure(figure, path)


def _shift_figure(params: PipelineParams, path: Path) -> Path:
    shifts = [s for r in _shift_table(params) if np.isfinite(s := float(r["shift_px"]))]
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.hist(shifts, bins=30, color="steelblue")
    axis.axvline(
        params.coregister.shift_flag_px,
        color="crimson",
        linestyle="--",
        label=f"flag at {params.coregister.shift_flag_px} px",
    )
    axis.set_xlabel("residual shift after co-registration (px)")
    axis.set_ylabel("pairs")
    axis.legend()
    figure.tight_layout()
    return save_figure(figure, path)


def _markdown(metrics: dict[str, Any], figures: dict[str, Path], report_dir: Path) -> str:
    lines = [
        "# GeoPile-2 build report",
        "",
        f"{metrics['items']} items -> {metrics['locations']} locations -> "
        f"{sum(metrics['chips'].values())} chips, {metrics['pairs']} pairs; "
        f"store: {metrics['store_files']} files, {metrics['store_mb']} MB.",
        "",
        "| sensor | chips |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {count} |" for name, count in metrics["chips"].items()]
    lines += [
        "",
        "Dropped chips: "
        + (", ".join(f"{k} {v}" for k, v in metrics["dropped"].items()) or "none")
        + ".",
        "Quarantined inputs: "
        + (", ".join(f"{k} {v}" for k, v in metrics["failure_reasons"].items()) or "none")
        + ".",
        "",
    ]
    qa = metrics["qa_shift"]
    lines += [
        f"Residual shift of {qa['pairs_measured']} co-registered pairs: median "
        f"{qa['p50_px']} px, p99 {qa['p99_px']} px, max {qa['max_px']} px; "
        f"{qa['flagged']} flagged"
        + (
            f"; {qa['pairs_without_structure']} without structure to measure a shift on"
            if qa["pairs_without_structure"]
            else ""
        )
        + ".",
        "",
    ]
    lines += [f"![{title}]({path.relative_to(report_dir)})" for title, path in figures.items()]
    return "\n".join(lines) + "\n"


def run_validate(params: PipelineParams, executor: Executor | None = None) -> Path:
    """Check the store (its chips on ``executor``'s workers) and write the reports.

    Raises StoreValidationError on a disagreement.
    """
    manifest = read_manifest(params.store)
    problems = check_store(params, manifest, executor)
    if problems:
        raise StoreValidationError(f"{params.store}:\n" + "\n".join(problems))
    report_dir = params.reports_dir
    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(params, manifest)
    figures = {
        "residual shifts": _shift_figure(params, report_dir / "figures" / "qa_shifts.png"),
        "paired chips": _pairs_figure(params, report_dir / "figures" / "pairs.png"),
    }
    write_text(report_dir / "geopile2.md", _markdown(metrics, figures, report_dir))
    return write_json(report_dir / "geopile2.json", metrics)
