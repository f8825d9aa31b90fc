"""The TorchGeo-user path of ``python -m model.benchmarks loader``: paired S2/S1 chips warped on the
fly from the sample world's SEN12MS COGs, and the source files behind a store's pairs (rates are
not asserted beyond being positive: performance is read from the command, never from tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torchgeo.samplers import RandomGeoSampler

from catalogs.store_format import ITEM_ID, open_store
from model.benchmarks.torchgeo_path import (
    OPTICAL_SENSOR,
    SAR_SENSOR,
    SourceFileError,
    paired_source_files,
    torchgeo_pair_dataset,
    torchgeo_pairs_per_s,
)
from tests.pipeline_setup import PAIRED_BUILD, STORE, WORLD, make_workspace, run_ok

CHIP_PX = 256  # the SEN12MS patch size: a chip as large as the tile must fit


@pytest.fixture(scope="module")
def sen12ms_files(sample_world: Path) -> list[tuple[Path, Path]]:
    """(S2, S1) COGs of the sample world's SEN12MS locations, matched by file name."""
    raw = sample_world / "raw" / "sen12ms"
    optical = sorted(raw.glob("ROIs*/s2_*/*.tif"))
    assert optical
    return [
        (
            path,
            path.parent.parent
            / path.parent.name.replace("s2_", "s1_")
            / path.name.replace("_s2_", "_s1_"),
        )
        for path in optical
    ]


@pytest.fixture(scope="module")
def paired_store(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Path:
    """A workspace with the store of the paired sources at the repository's chip grid."""
    folder = make_workspace(tmp_path_factory.mktemp("paired"), sample_world, PAIRED_BUILD)
    run_ok(folder)
    return folder


def test_a_sample_holds_both_sensors_at_the_chip_size(
    sen12ms_files: list[tuple[Path, Path]],
) -> None:
    dataset = torchgeo_pair_dataset(sen12ms_files)
    with torch.random.fork_rng(devices=[]):  # the sampler draws its tile from the global RNG
        torch.manual_seed(0)
        sampler = RandomGeoSampler(
            dataset, size=CHIP_PX, length=1, generator=torch.Generator().manual_seed(0)
        )
        sample = dataset[next(iter(sampler))]
    optical, sar = sample[OPTICAL_SENSOR], sample[SAR_SENSOR]
    assert optical.shape == (12, CHIP_PX, CHIP_PX) and optical.dtype == torch.float32
    assert sar.shape == (2, CHIP_PX, CHIP_PX) and sar.dtype == torch.float32
    assert (optical > 0).float().mean() > 0.99  # reflectance, not nodata
    # Really warped backscatter: finite dB (not the NaN nodata of the margin), plausible range,
    # with texture.
    assert torch.isfinite(sar).float().mean() > 0.99
    valid = sar[torch.isfinite(sar)]
    assert -50 < valid.min() and valid.max() < 20 and valid.std() > 0.1


def test_smaller_chips_are_sampled_inside_the_tiles(sen12ms_files: list[tuple[Path, Path]]) -> None:
    # Every batch's shapes are checked (a RuntimeError otherwise): 64 px chips from 256 px tiles.
    timing = torchgeo_pairs_per_s(sen12ms_files, 64, samples=8, batch_size=4, seed=3)
    assert timing.samples == 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_torchgeo_path_loads_pairs_at_a_positive_rate(
    sen12ms_files: list[tuple[Path, Path]], num_workers: int
) -> None:
    timing = torchgeo_pairs_per_s(
        sen12ms_files, CHIP_PX, samples=12, batch_size=4, num_workers=num_workers, seed=0
    )
    assert timing.samples == 8  # the first batch is the warm-up
    assert timing.seconds > 0 and timing.samples_per_s > 0


def test_too_few_samples_for_a_warm_up_are_refused(sen12ms_files: list[tuple[Path, Path]]) -> None:
    with pytest.raises(ValueError, match="warm-up"):
        torchgeo_pairs_per_s(sen12ms_files, CHIP_PX, samples=4, batch_size=4)


def test_paired_source_files_are_the_store_pairs_cogs(paired_store: Path) -> None:
    store = paired_store / STORE
    files = paired_source_files(store, paired_store / WORLD / "catalog.json")
    item_ids = [str(item_id) for item_id in open_store(store)[OPTICAL_SENSOR][ITEM_ID][:]]
    assert len(files) == len(set(item_ids)) == 4  # one pair of files per SEN12MS location
    assert len(set(files)) == len(files)
    for (optical, sar), item_id in zip(files, item_ids, strict=True):
        assert optical.is_file() and sar.is_file() and optical != sar
        # SEN12MS names: ROIs1158_spring_s2_1_p0.tif for item ROIs1158_spring_1_p0
        assert optical.name.replace("_s2_", "_") == f"{item_id}.tif"
        assert sar.name.replace("_s1_", "_") == f"{item_id}.tif"


def test_the_sensor_order_follows_the_arguments(paired_store: Path) -> None:
    store, catalog = paired_store / STORE, paired_store / WORLD / "catalog.json"
    swapped = paired_source_files(store, catalog, sensor_a=SAR_SENSOR, sensor_b=OPTICAL_SENSOR)
    assert swapped == [(sar, optical) for optical, sar in paired_source_files(store, catalog)]


def test_a_missing_source_file_names_its_item(paired_store: Path, tmp_path: Path) -> None:
    store = paired_store / STORE
    item_id = str(open_store(store)[OPTICAL_SENSOR][ITEM_ID][0])
    world = Path(shutil.copytree(paired_store / WORLD, tmp_path / WORLD))
    optical, _ = paired_source_files(store, world / "catalog.json")[0]
    optical.unlink()
    with pytest.raises(SourceFileError, match=item_id):
        paired_source_files(store, world / "catalog.json")
