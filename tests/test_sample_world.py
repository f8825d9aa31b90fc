"""The sample world: determinism, size, STAC validity and the physics downstream relies on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from rasterio.warp import Resampling, reproject
from shapely.geometry import box, shape

from catalogs.grid import Grid
from catalogs.sample import WRITERS, build_sample, downstream, pretraining
from catalogs.sample.render import sample_points
from catalogs.sample.world import World
from catalogs.stac import file_checksum
from tests.data.checks import validate_tree


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _items(world: Path, collection: str) -> list[pystac.Item]:
    catalog = pystac.Catalog.from_file(str(world / "catalog.json"))
    child = catalog.get_child(collection)
    assert child is not None, collection
    return sorted(child.get_items(), key=lambda item: item.id)


def _read(item: pystac.Item, key: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read().astype(np.float64), src.profile


def test_same_seed_gives_identical_files(sample_world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_sample(again, seed=0)
    expected = _hashes(sample_world)
    assert "catalog.json" in expected and len(expected) > 100
    assert _hashes(again) == expected


def test_another_seed_gives_another_world(tmp_path: Path) -> None:
    x, y = np.meshgrid(
        np.arange(705_000.0, 707_000.0, 50.0), np.arange(5_350_000.0, 5_352_000.0, 50.0)
    )
    assert not np.array_equal(World(0).landcover(x, y), World(1).landcover(x, y))
    assert np.array_equal(World(1).landcover(x, y), World(1).landcover(x, y))


def test_small_and_complete(sample_world: Path) -> None:
    size = sum(p.stat().st_size for p in sample_world.rglob("*") if p.is_file())
    assert size < 30e6
    catalog = pystac.Catalog.from_file(str(sample_world / "catalog.json"))
    assert sorted(c.id for c in catalog.get_children()) == sorted(WRITERS)
    counts = {c.id: len(list(c.get_items())) for c in catalog.get_children()}
    assert counts["sen12ms"] == (
        pretraining.SMALL.sen12ms_scenes * pretraining.SEN12MS_PATCHES_PER_SCENE
    )
    assert counts["mdas"] == pretraining.SMALL.mdas_sub_areas
    assert counts["millionaid"] == pretraining.MILLIONAID_TRAIN + pretraining.MILLIONAID_TEST
    assert (
        counts["geopile"]
        == len(pretraining.GEOPILE_CONSTITUENTS) * pretraining.GEOPILE_PER_CONSTITUENT
    )
    assert counts["bigearthnet"] == sum(downstream.BIGEARTHNET_SPLITS.values())
    assert counts["sen12ms-cr"] == len(downstream.SEN12MSCR_TRIPLETS)
    assert counts["spacenet2"] == downstream.SPACENET_IMAGES
    assert counts["vaihingen"] == len(downstream.VAIHINGEN_AREAS)
    assert json.loads((sample_world / "problems.json").read_text()) == []


def test_every_stac_object_validates_against_core_schemas(sample_world: Path) -> None:
    assert validate_tree(sample_world) == {}
    assert len(list(sample_world.rglob("*/*.json"))) > 50  # the walk had items to check


def test_extension_fields_match_the_files(sample_world: Path) -> None:
    for item in _items(sample_world, "sen12ms"):
        assert set(item.assets) == {"s1", "s2", "lc"}
        s1, s2 = item.assets["s1"].extra_fields, item.assets["s2"].extra_fields
        assert (s2["proj:code"], s1["proj:code"]) == ("EPSG:32632", "EPSG:32633")
        assert s1["sar:polarizations"] == ["VV", "VH"]
        assert [b["name"] for b in s2["bands"]][-2:] == ["B11", "B12"] and len(s2["bands"]) == 12
        for key, asset in item.assets.items():
            path = asset.get_absolute_href()
            with rasterio.open(path) as src:
                assert asset.extra_fields["proj:transform"] == list(src.transform)[:6], key
                assert asset.extra_fields["proj:shape"] == [src.height, src.width], key
            assert asset.extra_fields["file:checksum"] == file_checksum(path)
        assert item.geometry is not None and item.bbox is not None
    for item in _items(sample_world, "millionaid"):
        assert item.geometry is None and item.bbox is None
        assert item.assets["image"].extra_fields["proj:code"] is None


def test_rasters_are_cloud_optimized(sample_world: Path) -> None:
    (item, *_) = _items(sample_world, "sen12ms")
    with rasterio.open(item.assets["s2"].get_absolute_href()) as src:
        assert src.profile["tiled"] and src.block_shapes[0] == (128, 128)
        assert src.overviews(1) == [2]
        assert src.nodata == 0 and src.compression.name == "deflate"


def _water_masks(item: pystac.Item) -> tuple[np.ndarray, np.ndarray]:
    """Water seen by the land-cover layer (S2 grid) and by S1 reprojected onto that grid."""
    lc, lc_profile = _read(item, "lc")
    s1, s1_profile = _read(item, "s1")
    linear = np.zeros((1, *lc.shape[1:]))
    reproject(
        10 ** (s1[:1] / 10),
        linear,
        src_transform=s1_profile["transform"],
        src_crs=s1_profile["crs"],
        dst_transform=lc_profile["transform"],
        dst_crs=lc_profile["crs"],
        resampling=Resampling.average,
    )
    # Speckle is multiplicative: a 5 x 5 box mean before the threshold.
    kernel = np.ones(5) / 5
    smooth = np.apply_along_axis(np.convolve, 0, linear[0], kernel, mode="same")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, mode="same")
    return lc[0] == 17, 10 * np.log10(smooth) < -17.0


def test_s1_and_s2_differ_in_grid_but_their_edges_coincide(sample_world: Path) -> None:
    items = _items(sample_world, "sen12ms")
    masks = {item.id: _water_masks(item) for item in items}
    item_id = max(masks, key=lambda i: masks[i][0].mean())
    optical_water, radar_water = masks[item_id]
    assert optical_water.mean() > 0.05
    inner = (slice(8, -8), slice(8, -8))
    scores = {}
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            shifted = np.roll(radar_water, (dy, dx), axis=(0, 1))[inner]
            a = optical_water[inner]
            scores[(dy, dx)] = (a & shifted).sum() / (a | shifted).sum()
    best = max(scores, key=scores.get)
    assert abs(best[0]) <= 1 and abs(best[1]) <= 1, scores
    assert scores[best] > 0.85


def test_dsm_is_higher_on_buildings(sample_world: Path) -> None:
    world = World(0)
    for item in _items(sample_world, "mdas"):
        dsm, profile = _read(item, "dsm")
        buildings, _ = _read(item, "osm_buildings")
        grid = Grid(profile["crs"].to_string(), profile["transform"], dsm.shape[1:])
        ground = world.ground(*sample_points(grid))
        above_terrain = dsm[0] - ground.terrain_m
        on_roof = buildings[0] == 1
        open_ground = (ground.object_height_m == 0) & ~on_roof
        assert on_roof.mean() > 0.05
        assert above_terrain[on_roof].min() > 5.5  # the lowest building is 6 m
        assert np.abs(above_terrain[open_ground]).max() < 0.3  # DSM noise only
    for item in _items(sample_world, "vaihingen"):
        dsm, _ = _read(item, "dsm")
        labels, _ = _read(item, "labels")
        building = (labels == np.array([0, 0, 255])[:, None, None]).all(axis=0)
        impervious = (labels == 255).all(axis=0)
        assert np.median(dsm[0][building]) > np.median(dsm[0][impervious]) + 5.0


def test_clouds_brighten_s2_and_leave_s1_alone(sample_world: Path) -> None:
    world = World(0)
    for scene, item in enumerate(_items(sample_world, "sen12ms-cr"), start=1):
        clear, profile = _read(item, "s2")
        cloudy, _ = _read(item, "s2_cloudy")
        s1, _ = _read(item, "s1")
        grid = Grid(profile["crs"].to_string(), profile["transform"], clear.shape[1:])
        x, y = sample_points(grid)
        # The items sort like the writer's triplets, so scene numbers line up.
        opacity = world.cloud_opacity(x, y, scene)
        under_cloud, open_sky = opacity > 0.9, opacity == 0
        assert under_cloud.mean() > 0.05 and open_sky.mean() > 0.05
        visible = slice(1, 4)  # B02, B03, B04
        gain = (cloudy[visible] - clear[visible]) * 1e-4
        assert gain[:, under_cloud].mean(axis=1).min() > 0.3
        landcover = world.ground(x, y).landcover
        for cls in np.unique(landcover):
            cloudy_cls, open_cls = (landcover == cls) & under_cloud, (landcover == cls) & open_sky
            if cloudy_cls.sum() < 500 or open_cls.sum() < 500:
                continue
            vv_under, vv_open = s1[0][cloudy_cls].mean(), s1[0][open_cls].mean()
            assert abs(vv_under - vv_open) < 0.5, (cls, vv_under, vv_open)
            b04_under, b04_open = cloudy[3][cloudy_cls].mean(), cloudy[3][open_cls].mean()
            assert (b04_under - b04_open) * 1e-4 > 0.3


@pytest.mark.parametrize("collection", ["bigearthnet", "spacenet2", "vaihingen", "mdas"])
def test_pairs_share_ground(sample_world: Path, collection: str) -> None:
    """Every asset of an item covers the item's footprint (pairs are really co-located)."""
    for item in _items(sample_world, collection):
        footprint = shape(item.geometry)
        for key, asset in item.assets.items():
            if "proj:bbox" not in asset.extra_fields:
                continue
            to_wgs84 = Transformer.from_crs(
                asset.extra_fields["proj:code"], "EPSG:4326", always_xy=True
            )
            bounds = to_wgs84.transform_bounds(*asset.extra_fields["proj:bbox"])
            overlap = box(*bounds).intersection(footprint).area / footprint.area
            assert overlap > 0.95, (item.id, key, overlap)


def test_torchgeo_reads_the_downstream_sets(sample_world: Path) -> None:
    """TorchGeo's own classes load the sample's BigEarthNet and Vaihingen, labels included."""
    from torchgeo.datasets import BigEarthNet, Vaihingen2D

    raw = sample_world / "raw"
    bigearthnet = BigEarthNet(root=raw / "bigearthnet", split="train", bands="all", num_classes=43)
    sample = bigearthnet[0]
    assert len(bigearthnet) == downstream.BIGEARTHNET_SPLITS["train"]
    assert sample["image"].shape == (14, 120, 120) and sample["label"].sum() >= 1
    vaihingen = Vaihingen2D(root=raw / "vaihingen", split="train")
    sample = vaihingen[0]
    assert sample["image"].shape == (3, downstream.VAIHINGEN_PX, downstream.VAIHINGEN_PX)
    # Building (class 2 in TorchGeo's order) and impervious surfaces are both present.
    assert {1, 2} <= set(sample["mask"].unique().tolist())
