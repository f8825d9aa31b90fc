"""The whole pipeline (``python -m pipeline run``) over the sample world: bad inputs are reported
and quarantined while the run goes on (and a run with nothing usable fails clearly), and a dask
LocalCluster build equals a single-process one byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.__main__ import main
from pipeline.chips import ChipFile
from tests.pipeline_setup import (
    BUSY_BUILD,
    PAIRED_BUILD,
    REPORTS,
    STORE,
    WORK,
    WORLD,
    Build,
    asset_path,
    busy_reference,
    chip_counts,
    chip_hashes,
    clone_item,
    describe_file,
    file_hashes,
    item_ids,
    make_workspace,
    multihash,
    rewrite_raster,
    run_ok,
    run_pipeline,
)

S12 = "ROIs1158_spring_1_p0"  # the SEN12MS item the damaged SEN12MS items are copies of
MDAS = "mdas_sub_area_1"  # likewise for MDAS
GOOD_ITEMS = {
    "sen12ms": {
        "ROIs1158_spring_1_p0",
        "ROIs1158_spring_1_p1",
        "ROIs1868_summer_3_p0",
        "ROIs1868_summer_3_p1",
    },
    "mdas": {"mdas_sub_area_1", "mdas_sub_area_2"},
}
SENSORS = {"sen12ms": ("sentinel1_grd", "sentinel2_l2a"), "mdas": ("dsm", "rgb")}


def _flip_last_bytes(path: Path) -> None:
    """Change pixel bytes at the end of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    data[-100:-90] = bytes(b ^ 0xFF for b in data[-100:-90])
    path.write_bytes(data)


def _scramble_header(path: Path) -> None:
    """Overwrite the TIFF header's first IFD with garbage, keeping the size."""
    data = bytearray(path.read_bytes())
    data[8:1032] = bytes(range(256)) * 4
    path.write_bytes(data)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# item id -> (collection, original item, damaged asset, damage, catalog describes the damage)
DAMAGES = {
    "bad_checksum": ("sen12ms", S12, "s2", _flip_last_bytes, False),
    "bad_missing": ("mdas", MDAS, "dsm", Path.unlink, False),
    "bad_corrupt": ("sen12ms", S12, "s2", _scramble_header, True),
    "bad_truncated": ("sen12ms", S12, "s1", _truncate, True),
    "bad_no_crs": ("sen12ms", S12, "s1", lambda p: rewrite_raster(p, crs=None), True),
    "bad_no_transform": ("mdas", MDAS, "dsm", lambda p: rewrite_raster(p, transform=None), True),
    "bad_band_count": ("sen12ms", S12, "s2", lambda p: rewrite_raster(p, bands=11), True),
    "bad_all_nodata": ("mdas", MDAS, "dsm", lambda p: rewrite_raster(p, fill=-9999.0), True),
}
# The stage and reason each damaged item is quarantined with (None: checked below).
EXPECTED_REASONS = {
    "bad_checksum": ("fetch", None),
    "bad_missing": ("fetch", "missing file"),
    "bad_corrupt": ("coregister", None),
    "bad_truncated": ("coregister", None),
    "bad_no_crs": ("coregister", "no CRS"),
    "bad_no_transform": ("coregister", "no geotransform"),
    "bad_band_count": ("coregister", "11 bands, the registry's sentinel2_l2a has 12"),
    "bad_all_nodata": ("coregister", "all pixels are nodata"),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Build:
    return busy_reference(tmp_path_factory, sample_world)


def test_every_bad_input_is_reported_and_the_run_completes(
    sample_world: Path, tmp_path: Path
) -> None:
    folder = make_workspace(tmp_path, sample_world, PAIRED_BUILD, copy_world=True)
    world = folder / WORLD
    paths, checksums = {}, {}
    for item_id, (collection, original, key, damage, describe) in DAMAGES.items():
        clone_item(world, collection, original, item_id, own_files=[key])
        paths[item_id] = asset_path(world, collection, item_id, key)
        checksums[item_id] = multihash(paths[item_id])
        damage(paths[item_id])
        if describe:
            describe_file(world, collection, item_id, key)

    done = run_pipeline(folder)
    assert done.returncode == 0, done.stderr  # the undamaged items were usable

    failures = {
        stage: json.loads((folder / WORK / "failures" / f"{stage}.json").read_text())
        for stage in ("fetch", "coregister")
    }
    for stage, rows in failures.items():
        assert sorted(row["item_id"] for row in rows) == sorted(
            item
            for item, (expected_stage, _) in EXPECTED_REASONS.items()
            if expected_stage == stage
        )
        for row in rows:
            expected_stage, reason = EXPECTED_REASONS[row["item_id"]]
            assert row["stage"] == stage
            assert row["path"] == str(paths[row["item_id"]])
            if reason is not None:
                assert row["reason"] == reason
    reasons = {row["item_id"]: row["reason"] for rows in failures.values() for row in rows}
    assert reasons["bad_checksum"] == (
        f"checksum mismatch: expected {checksums['bad_checksum']}"
        f", got {multihash(paths['bad_checksum'])}"
    )
    for item_id in ("bad_corrupt", "bad_truncated"):  # GDAL's own words in the brackets
        assert reasons[item_id].startswith("unreadable GeoTIFF (")
        assert reasons[item_id].endswith(")")

    # Quarantined: in no chip file (but recorded in its batch's, so a rerun reports it again
    # without retrying it), nothing in the store; every undamaged item is there.
    chip_files = [ChipFile(p) for p in (folder / WORK / "chips").rglob("*.npz")]
    assert sorted(loc["item_id"] for f in chip_files for loc in f.locations) == sorted(
        GOOD_ITEMS["sen12ms"] | GOOD_ITEMS["mdas"]
    )
    assert sorted(row["item_id"] for f in chip_files for row in f.failures) == sorted(
        row["item_id"] for row in failures["coregister"]
    )
    stored = item_ids(folder / STORE)
    assert stored == {
        sensor: GOOD_ITEMS[source] for source, sensors in SENSORS.items() for sensor in sensors
    }
    assert chip_counts(folder / STORE) == {
        "dsm": 8,
        "rgb": 8,
        "sentinel1_grd": 4,
        "sentinel2_l2a": 4,
    }

    report = json.loads((folder / REPORTS / "geopile2.json").read_text())
    assert report["items"] == 6 + len(DAMAGES)
    assert report["locations"] == 6
    assert report["failures"] == {"coregister": 6, "fetch": 2}
    assert report["failure_reasons"] == {
        "11 bands, the registry's sentinel2_l2a has 12": 1,
        "all pixels are nodata": 1,
        "checksum mismatch": 1,
        "missing file": 1,
        "no CRS": 1,
        "no geotransform": 1,
        "unreadable GeoTIFF": 2,
    }
    assert "unreadable GeoTIFF 2" in (folder / REPORTS / "geopile2.md").read_text()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "fetch: no item could be fetched (4 failures)"),
        ("all_nodata", "coregister: no item could be co-registered (4 failures)"),
    ],
)
def test_a_run_with_nothing_usable_fails_with_a_clear_message(
    sample_world: Path, tmp_path: Path, damage: str, message: str
) -> None:
    build = {**PAIRED_BUILD, "collections": ["sen12ms"]}
    folder = make_workspace(tmp_path, sample_world, build, copy_world=True)
    world = folder / WORLD
    for item_id in GOOD_ITEMS["sen12ms"]:
        path = asset_path(world, "sen12ms", item_id, "s2")
        if damage == "missing":
            path.unlink()
        else:
            rewrite_raster(path, fill=0)
            describe_file(world, "sen12ms", item_id, "s2")

    done = run_pipeline(folder)
    assert done.returncode == 1
    assert message in done.stderr.splitlines()
    stage = message.split(":")[0]
    rows = json.loads((folder / WORK / "failures" / f"{stage}.json").read_text())
    assert sorted(row["item_id"] for row in rows) == sorted(GOOD_ITEMS["sen12ms"])
    assert {row["reason"] for row in rows} == (
        {"missing file"} if damage == "missing" else {"all pixels are nodata"}
    )
    assert not (folder / STORE).exists()
    assert not (folder / REPORTS / "geopile2.json").exists()


def test_a_sensor_whose_every_chip_is_dropped_is_left_out(
    sample_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Voids in every MDAS DSM and no nodata allowed: no MDAS chip is kept, so the store has
    no dsm group, and the run still validates and completes with the pictures."""
    build = {
        **PAIRED_BUILD,
        "collections": ["mdas", "millionaid"],
        "coregister": {**PAIRED_BUILD["coregister"], "max_nodata_share": 0.0},
    }
    folder = make_workspace(tmp_path, sample_world, build, copy_world=True)
    for item_id in GOOD_ITEMS["mdas"]:
        rewrite_raster(asset_path(folder / WORLD, "mdas", item_id, "dsm"), holes=-9999.0)
        describe_file(folder / WORLD, "mdas", item_id, "dsm")
    monkeypatch.chdir(folder)

    assert main(["run", "--params", "params.yaml", "--workers", "0", "--quiet"]) == 0

    pictures = len(list((folder / WORLD / "millionaid").glob("*/*.json")))
    assert chip_counts(folder / STORE) == {"rgb": pictures}
    report = json.loads((folder / REPORTS / "geopile2.json").read_text())
    assert report["chips"] == {"rgb": pictures}
    assert report["pairs"] == 0
    assert report["dropped"] == {"nodata": 8}
    summary = json.loads((folder / WORK / "coregister.json").read_text())
    assert summary["chips"] == {"dsm": 0, "rgb": pictures}


def test_two_worker_local_cluster_build_equals_the_single_process_build(
    reference: Build, sample_world: Path, tmp_path: Path
) -> None:
    folder = make_workspace(tmp_path, sample_world, BUSY_BUILD)
    run_ok(folder, workers=2)
    expected = file_hashes(reference.store)
    assert len(expected) > 100  # ~60 shard files and the metadata: a real comparison
    assert file_hashes(folder / STORE) == expected
    assert chip_hashes(folder / STORE) == chip_hashes(reference.store)
    for name in ("coregister.json", "qa.csv"):
        assert (folder / WORK / name).read_bytes() == (reference.folder / WORK / name).read_bytes()
