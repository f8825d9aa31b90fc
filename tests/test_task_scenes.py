"""Whole sample scenes per downstream task (catalogs/sample/task_scenes.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer

from catalogs.item_assets import sensor_assets
from catalogs.sample.scenes import S1_MARGIN_M, S1_ORIGIN_SHIFT_M
from catalogs.sample.task_scenes import TASKS, main, render_task_scene
from catalogs.sensors import get_sensor
from catalogs.stac import validate_core
from model.datamodules.bigearthnet import BigEarthNetDataModule
from model.datamodules.sen12ms_cr import SEN12MSCRDataModule
from model.datamodules.spacenet2 import SpaceNet2DataModule
from model.datamodules.vaihingen import VaihingenDataModule

SIZE_PX = 256
# Per item (reference first): the registry sensor of each asset key.
EXPECTED_ASSETS = {
    "segmentation": [{"cir": "cir", "dsm": "dsm"}],
    "pansharpening": [{"pan": "worldview3_pan", "ms": "worldview3_ms"}],
    "cloud_removal": [{"s2_cloudy": "sentinel2_l1c"}, {"s1": "sentinel1_grd"}],
    "classification": [
        {"s2": "sentinel2_l2a", "s2_20m": "sentinel2_l2a", "s2_60m": "sentinel2_l2a"},
        {"s1": "sentinel1_grd"},
    ],
}
# What each task's fine-tuning data module feeds the network.
INPUT_SENSORS = {
    "segmentation": set(VaihingenDataModule.input_keys),
    "pansharpening": {SpaceNet2DataModule.pan_sensor, SpaceNet2DataModule.ms_sensor},
    "cloud_removal": set(SEN12MSCRDataModule.input_keys),
    "classification": set(BigEarthNetDataModule.allowed_sensors),
}


def _scene(root: Path, task: str, coverage: float) -> list[Path]:
    return render_task_scene(task, root / f"{task}-{coverage}", SIZE_PX, 0, coverage)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, float], list[Path]]:
    """Every task rendered with full and half partner coverage."""
    root = tmp_path_factory.mktemp("task-scenes")
    return {(t, c): _scene(root, t, c) for t in TASKS for c in (1.0, 0.5)}


def _items(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in paths]


def _file(path: Path, item: dict[str, Any], key: str) -> Path:
    return path.parent / item["assets"][key]["href"]


@pytest.mark.parametrize("task", TASKS)
def test_items_read_as_the_task_input_sensors_with_every_band(
    scenes: dict[tuple[str, float], list[Path]], task: str
) -> None:
    paths = scenes[task, 1.0]
    items = _items(paths)
    assert [p.name for p in paths] == [f"{item['id']}.json" for item in items]
    held: set[str] = set()
    for path, item, expected in zip(paths, items, EXPECTED_ASSETS[task], strict=True):
        assert validate_core(item) == []
        by_sensor = sensor_assets(item)
        assert {a.key: name for name, assets in by_sensor.items() for a in assets} == expected
        for name, assets in by_sensor.items():
            bands = [band for asset in assets for band in asset.band_names]
            assert sorted(bands) == sorted(get_sensor(name).band_names)
        for key, asset in pystac.Item.from_file(path).assets.items():
            assert item["assets"][key]["href"] == f"./{key}.tif"  # moves with its folder
            assert Path(asset.get_absolute_href()) == path.parent / f"{key}.tif"
        held |= set(by_sensor)
        assert item["properties"]["msgfm:partner_coverage"] == 1.0
        assert "msgfm:sample_nodata_window" not in item["properties"]
    assert held == INPUT_SENSORS[task]


def _grid(path: Path) -> tuple[str, rasterio.Affine, tuple[int, int], int]:
    with rasterio.open(path) as src:
        return src.crs.to_string(), src.transform, src.shape, src.count


def _grids(paths: list[Path]) -> dict[str, tuple[str, rasterio.Affine, tuple[int, int], int]]:
    return {
        key: _grid(_file(path, item, key))
        for path, item in zip(paths, _items(paths), strict=True)
        for key in item["assets"]
    }


def test_single_item_grids(scenes: dict[tuple[str, float], list[Path]]) -> None:
    grids = _grids(scenes["segmentation", 1.0])
    assert grids["cir"][0] == grids["dsm"][0] == "EPSG:32632"
    assert grids["cir"][1] == grids["dsm"][1] and grids["cir"][1].a == pytest.approx(0.09)
    assert grids["cir"][2:] == ((SIZE_PX, SIZE_PX), 3) and grids["dsm"][2:] == ((SIZE_PX,) * 2, 1)
    grids = _grids(scenes["pansharpening", 1.0])
    (pan_crs, pan, pan_shape, _), (ms_crs, ms, ms_shape, ms_bands) = grids["pan"], grids["ms"]
    assert pan_crs == ms_crs == "EPSG:4326"
    assert (ms.a / pan.a, ms.e / pan.e) == pytest.approx((4.0, 4.0))
    assert (ms.c, ms.f) == (pan.c, pan.f)
    assert pan_shape == (SIZE_PX, SIZE_PX) and ms_shape == (SIZE_PX // 4,) * 2 and ms_bands == 8


def test_sentinel_grids(scenes: dict[tuple[str, float], list[Path]]) -> None:
    for task, reference in (("cloud_removal", "s2_cloudy"), ("classification", "s2")):
        grids = _grids(scenes[task, 1.0])
        crs, ref, shape, _ = grids[reference]
        assert (crs, ref.a, shape) == ("EPSG:32632", 10.0, (SIZE_PX, SIZE_PX))
        s1_crs, s1, _, s1_bands = grids["s1"]
        assert (s1_crs, s1.a, s1_bands) == ("EPSG:32633", 10.0, 2)
        assert (s1.c % 10.0, s1.f % 10.0) == pytest.approx(S1_ORIGIN_SHIFT_M)
    assert grids["s2"][3] == 4
    for key, gsd_m, bands in (("s2_20m", 20.0, 6), ("s2_60m", 60.0, 2)):
        crs, transform, shape, count = grids[key]
        assert (crs, transform.a, count) == ("EPSG:32632", gsd_m, bands)
        assert (transform.c, transform.f) == (grids["s2"][1].c, grids["s2"][1].f)
        assert shape == (math.ceil(SIZE_PX * 10 / gsd_m),) * 2
    assert (
        _grid(
            _file(
                scenes["cloud_removal", 1.0][0],
                _items(scenes["cloud_removal", 1.0])[0],
                "s2_cloudy",
            )
        )[3]
        == 13
    )


def test_rerun_is_byte_identical(
    scenes: dict[tuple[str, float], list[Path]], tmp_path: Path
) -> None:
    for task in TASKS:
        first = scenes[task, 0.5][0].parent
        again = _scene(tmp_path, task, 0.5)[0].parent
        names = sorted(p.name for p in first.iterdir())
        assert names == sorted(p.name for p in again.iterdir())
        for name in names:
            assert (first / name).read_bytes() == (again / name).read_bytes(), (task, name)


def _s1_right_edge(paths: list[Path]) -> tuple[float, float, float]:
    """The reference's left and right edges and the partner S1's right edge, in UTM 32N."""
    reference, partner = _items(paths)
    ref_left, _, ref_right, _ = next(iter(reference["assets"].values()))["proj:bbox"]
    s1 = partner["assets"]["s1"]["proj:bbox"]
    to_32632 = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    return ref_left, ref_right, to_32632.transform_bounds(*s1, densify_pts=21)[2]


def test_partner_coverage_clips_the_partner_extent(
    scenes: dict[tuple[str, float], list[Path]],
) -> None:
    grids = _grids(scenes["segmentation", 0.5])
    assert grids["dsm"][2] == (SIZE_PX, SIZE_PX // 2) and grids["dsm"][1] == grids["cir"][1]
    grids = _grids(scenes["pansharpening", 0.5])
    assert grids["ms"][2] == (SIZE_PX // 4, SIZE_PX // 8) and grids["ms"][1].c == grids["pan"][1].c
    for task in ("cloud_removal", "classification"):
        left, right, full_s1_right = _s1_right_edge(scenes[task, 1.0])
        assert full_s1_right >= right
        left, right, half_s1_right = _s1_right_edge(scenes[task, 0.5])
        # Half the scene, plus the covering grid's margin and the tilt of another zone (the
        # box of a box of a tilted box): well short of three quarters.
        middle = left + (right - left) / 2
        assert middle + S1_MARGIN_M <= half_s1_right <= left + (right - left) * 3 / 4
    for paths in (scenes[t, 0.5] for t in TASKS):
        assert {item["properties"]["msgfm:partner_coverage"] for item in _items(paths)} == {0.5}


@pytest.mark.parametrize(
    ("task", "sensor", "side"),
    [
        ("segmentation", "dsm", 58),  # cir has no nodata value: the DSM carries the window
        ("pansharpening", "worldview3_pan", 58),
        ("cloud_removal", "sentinel2_l1c", 58),
        ("classification", "sentinel2_l2a", 60),  # a whole number of 60 m pixels
    ],
)
def test_nodata_window_in_the_reference(
    scenes: dict[tuple[str, float], list[Path]], task: str, sensor: str, side: int
) -> None:
    path = scenes[task, 0.5][0]
    item = _items([path])[0]
    properties = item["properties"]
    assert properties["msgfm:sample_nodata_window"] == [0, 0, side, side]
    assert properties["msgfm:sample_nodata_sensor"] == sensor
    assert side * side / SIZE_PX**2 == pytest.approx(0.05, abs=0.01)
    nodata = get_sensor(sensor).nodata
    reference_gsd = next(iter(item["assets"].values()))["proj:transform"][0]
    keys = [k for k, a in item["assets"].items() if a["msgfm:sensor"] == sensor]
    for key in keys:
        factor = round(item["assets"][key]["proj:transform"][0] / reference_gsd)
        with rasterio.open(_file(path, item, key)) as src:
            data = src.read()
            assert src.nodata == nodata
        inside = side // factor
        assert np.all(data[:, :inside, :inside] == nodata)
        assert not np.any(data[:, inside:, :] == nodata) and not np.any(
            data[:, :, inside:] == nodata
        )


def test_unknown_task_names_the_tasks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="segmentation, pansharpening, cloud_removal, classif"):
        render_task_scene("detection", tmp_path / "scene")
    with pytest.raises(ValueError, match="partner_coverage 0"):
        render_task_scene("segmentation", tmp_path / "scene", 64, partner_coverage=0.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        render_task_scene("pansharpening", tmp_path / "scene", 66)
    assert not (tmp_path / "scene").exists()


def test_cli_prints_the_item_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scene"
    args = ["--task", "cloud_removal", "--out", str(out), "--size-px", "64", "--seed", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(out / "cloud_removal_scene.json"),
        str(out / "cloud_removal_scene_s1.json"),
    ]
    with pytest.raises(SystemExit) as exit_code:
        main(["--help"])
    assert exit_code.value.code == 0
    assert "partner" in capsys.readouterr().out
