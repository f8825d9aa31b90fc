"""The scale bench (``python -m pipeline.benchmarks --items N``): its input is valid STAC that the
builders would write and the registry reads as it reads the sample world; its figures follow
their stated formulas (the figures themselves are not asserted: performance is read from the
command, never from tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
from PIL import Image

from catalogs.builders import BUILDERS
from catalogs.item_assets import sensor_assets
from pipeline.benchmarks.__main__ import main
from pipeline.benchmarks.scale_catalog import (
    PROPORTIONS,
    asset_paths,
    catalog_items,
    ensure_items,
    geopile2_counts,
)
from pipeline.benchmarks.scale_projection import (
    STAGES,
    SUMMARY_KEYS,
    StageRun,
    _count_files,
    _decode,
    projected_seconds,
)
from tests.data.checks import validate_tree

REPO = Path(__file__).resolve().parents[1]
ITEMS = 60


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale-bench")


@pytest.fixture(scope="module")
def catalog(bench_dir: Path) -> Path:
    return ensure_items(bench_dir, ITEMS, seed=0)


def test_counts_keep_geopile2_proportions_and_sum_to_n() -> None:
    assert geopile2_counts(20_000) == {"millionaid": 11236, "geopile": 6742, "sen12ms": 2022}
    assert geopile2_counts(1_780_000) == PROPORTIONS
    for items in (1, 2, 3, 7, 200, 2501):
        counts = geopile2_counts(items)
        assert sum(counts.values()) == items
        total = sum(PROPORTIONS.values())
        assert all(abs(counts[n] - items * p / total) < 1 for n, p in PROPORTIONS.items())


def test_rendered_catalog_is_valid_stac_with_one_own_file_per_asset(catalog: Path) -> None:
    assert validate_tree(catalog) == {}
    items = list(catalog_items(catalog))
    assert len(items) == ITEMS
    assert len({item["id"] for item in items}) == ITEMS
    counts = {name: sum(item["collection"] == name for item in items) for name in PROPORTIONS}
    assert counts == geopile2_counts(ITEMS)
    paths = [path for item in items for path in asset_paths(catalog, item).values()]
    assert len(set(paths)) == len(paths) and all(path.is_file() for path in paths)
    for item in items[:: ITEMS // 6]:
        loaded = pystac.Item.from_file(
            str(catalog.parent / item["collection"] / item["id"] / f"{item['id']}.json")
        )
        assert loaded.collection_id == item["collection"]
        expected = (
            {"sentinel2_l2a", "sentinel1_grd", "modis_landcover"}
            if item["collection"] == "sen12ms"
            else {"rgb"}
        )
        assert set(sensor_assets(item)) == expected


def _comparable(item: dict[str, Any], paths: dict[str, Path]) -> dict[str, Any]:
    """An item without its links, its asset hrefs replaced by the files they name."""
    assets = {key: {**asset, "href": str(paths[key])} for key, asset in item["assets"].items()}
    return {**{k: v for k, v in item.items() if k not in ("links", "collection")}, "assets": assets}


def test_rendered_items_are_what_the_catalog_builders_write(catalog: Path) -> None:
    rendered = {
        item["id"]: _comparable(item, asset_paths(catalog, item)) for item in catalog_items(catalog)
    }
    built: dict[str, Any] = {}
    for source in PROPORTIONS:
        result = BUILDERS[source](catalog.parent / "raw" / source)
        assert result.problems == []
        for item in result.items:
            d = json.loads(json.dumps(item.to_dict()))  # as written: tuples become lists
            built[item.id] = _comparable(
                d, {key: Path(asset["href"]) for key, asset in d["assets"].items()}
            )
    assert built.keys() == rendered.keys()
    for item_id, item in rendered.items():
        assert item == built[item_id], item_id


def test_picture_sizes_follow_the_mix_and_decode_at_the_smallest_scale_keeping_a_chip(
    catalog: Path,
) -> None:
    sides = {}
    for item in catalog_items(catalog):
        if item["collection"] != "sen12ms":
            path = asset_paths(catalog, item)["image"]
            sides[max(item["assets"]["image"]["proj:shape"])] = path
    assert set(sides) <= {256, 512, 600, 768, 1024} and len(sides) >= 3
    for side, path in sides.items():
        with Image.open(path) as image:
            assert image.size == (side, side)
        # JPEG scales 1, 1/2, 1/4, 1/8: the smallest keeping 256 px a side
        reduced = next(math.ceil(side / d) for d in (8, 4, 2, 1) if math.ceil(side / d) >= 256)
        assert _decode(path, 256).shape == (3, reduced, reduced)


def test_projection_is_serial_per_item_times_target_plus_parallel_over_cores() -> None:
    stages = [
        StageRun("a", 9.0, serial_cpu_s=2.0, parallel_cpu_s=0.0),
        StageRun("b", 9.0, serial_cpu_s=1.0, parallel_cpu_s=64.0),
    ]
    # per item: serial 3/1000 s, parallel 64/1000 s -> 2e6 * (0.003 + 0.001)
    assert projected_seconds(stages, 1000) == pytest.approx(8000.0)
    assert projected_seconds(stages, 1000, target_items=1000, cores=1) == pytest.approx(67.0)


def test_count_files_counts_every_file_below_a_folder(tmp_path: Path) -> None:
    for name in ("a", "b/c", "b/d/e", "b/d/.hidden"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    assert _count_files(tmp_path) == 4


def test_scale_bench_ends_with_its_json_line_whose_figures_follow_the_table(
    bench_dir: Path, catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "--items",
                str(ITEMS),
                "--bench-dir",
                str(bench_dir),
                "--params",
                str(REPO / "params.yaml"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["items"] == ITEMS
    assert tuple(summary["items_per_s_per_core"]) == STAGES
    assert all(value > 0 for value in summary["items_per_s_per_core"].values())
    assert summary["decode_encode_bound_items_per_s_per_core"] > 0
    assert summary["work_files_per_1000_items"] > 0
    assert 0 <= summary["dask_upkeep_cpu_s_per_wall_s"] < 1  # CPU s per wall s of one process
    # The table's per-item figures (ms, serial and parallel) give the JSON's projection.
    rows = {
        parts[0]: parts for parts in map(str.split, lines) if len(parts) == 7 and parts[0] in STAGES
    }
    serial_ms = [float(rows[name][5]) for name in STAGES]
    parallel_ms = [float(rows[name][6]) for name in STAGES]
    hours = sum(2e6 * (s + p / 64) / 1000 for s, p in zip(serial_ms, parallel_ms, strict=True))
    assert summary["projected_hours_2m_items_64_cores"] == pytest.approx(hours / 3600, rel=0.02)
    assert summary["serial_s_per_million"] == pytest.approx(1000 * sum(serial_ms), rel=0.02)
    assert not any((bench_dir / "scale" / "runs").iterdir())  # the build's scratch is gone
    assert np.isfinite(summary["serial_s_per_million"])
