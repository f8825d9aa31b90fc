"""The downstream datamodules on tiny copies of the four benchmarks in their official layouts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from torch import Tensor
from torchgeo.datasets import BigEarthNet

from model.datamodules.downstream import (
    BigEarthNetDataModule,
    DownstreamDataModule,
    SEN12MSCRDataModule,
    SpaceNet2DataModule,
    VaihingenDataModule,
    tile_origins,
    wald_degradation,
)
from tests.data.bigearthnet import data as bigearthnet_data
from tests.data.rasters import write_geotiff
from tests.data.sen12ms_cr import data as sen12ms_cr_data
from tests.data.spacenet2 import data as spacenet2_data
from tests.data.vaihingen import data as vaihingen_data

TRAIN_ROWS = 40  # rows of the BigEarthNet train CSV (its two train patches, repeated)
SEN12MS_CR_PX = 8
SPACENET_PX = 16
VAIHINGEN_PX = 16
L2A_TRIPLET = ("ROIs1158_spring", 1, 31)  # 12 bands: not a SEN12MS-CR sample, removed
VAL_TRIPLET = ("ROIs2017_winter", 22, 4)
SPACENET_VAL = ("AOI_3_Paris", 18)
EXTRA_TRAIN_AREA = 3  # a copy of area 1, so that a training area can be held out


@pytest.fixture(scope="module")
def bigearthnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = bigearthnet_data.make_bigearthnet(tmp_path_factory.mktemp("bigearthnet"))
    train = [f"{p.s2},{p.s1}\n" for p in bigearthnet_data.PATCHES if p.split == "train"]
    (root / "bigearthnet-train.csv").write_text("".join(train * (TRAIN_ROWS // len(train))))
    return root


@pytest.fixture(scope="module")
def sen12ms_cr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = sen12ms_cr_data.make_sen12ms_cr(tmp_path_factory.mktemp("sen12ms_cr"), splits=True)
    for modality in sen12ms_cr_data.MODALITIES:
        sen12ms_cr_data.triplet_path(root, *L2A_TRIPLET, modality).unlink()
    return root


@pytest.fixture(scope="module")
def spacenet2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spacenet2_data.make_spacenet2(tmp_path_factory.mktemp("spacenet2"), split_images=True)


@pytest.fixture(scope="module")
def vaihingen_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = vaihingen_data.make_vaihingen(tmp_path_factory.mktemp("vaihingen"))
    for kind in ("cir", "dsm", "labels"):
        shutil.copy(vaihingen_data.area_path(root, 1, kind),
                    vaihingen_data.area_path(root, EXTRA_TRAIN_AREA, kind))
    return root


@pytest.fixture
def roots(bigearthnet_root: Path, sen12ms_cr_root: Path, spacenet2_root: Path,
          vaihingen_root: Path) -> dict[str, Path]:
    return {"bigearthnet": bigearthnet_root, "sen12ms_cr": sen12ms_cr_root,
            "spacenet2": spacenet2_root, "vaihingen": vaihingen_root}


# Task -> arguments of its datamodule in the tests (BigEarthNet's train CSV repeats two
# patches: a few samples give the statistics).
ARGUMENTS: dict[str, dict[str, object]] = {
    "bigearthnet": {"input_px": 64, "statistics_samples": 4},
    "sen12ms_cr": {"input_px": SEN12MS_CR_PX},
    "spacenet2": {"input_px": SPACENET_PX},
    "vaihingen": {"input_px": VAIHINGEN_PX},
}
DATAMODULES: dict[str, Callable[..., DownstreamDataModule]] = {
    "bigearthnet": BigEarthNetDataModule, "sen12ms_cr": SEN12MSCRDataModule,
    "spacenet2": SpaceNet2DataModule, "vaihingen": VaihingenDataModule}


def make(task: str, roots: dict[str, Path], **kwargs: object) -> DownstreamDataModule:
    """The task's datamodule on its fixture, set up."""
    datamodule = DATAMODULES[task](roots[task], **{**ARGUMENTS[task], **kwargs})
    datamodule.setup("fit")
    return datamodule


# Task -> (input shapes, other keys' shapes and dtypes) of one item.
ITEM_FORMATS: dict[str, tuple[dict[str, tuple[int, ...]],
                              dict[str, tuple[tuple[int, ...], torch.dtype]]]] = {
    "bigearthnet": ({"sentinel2_l2a": (12, 64, 64), "sentinel1_grd": (2, 64, 64)},
                    {"target": ((19,), torch.float32)}),
    "sen12ms_cr": ({"sentinel2_l1c": (13, 8, 8), "sentinel1_grd": (2, 8, 8)},
                   {"target": ((13, 8, 8), torch.float32)}),
    "spacenet2": ({"worldview3_ms": (8, 16, 16), "worldview3_pan": (1, 16, 16)},
                  {"target": ((8, 16, 16), torch.float32), "valid": ((1, 16, 16), torch.bool),
                   "pan_low": ((1, 16, 16), torch.float32),
                   "ms_low": ((8, 4, 4), torch.float32)}),
    "vaihingen": ({"cir": (3, 16, 16), "dsm": (1, 16, 16)},
                  {"target": ((16, 16), torch.int64), "valid": ((1, 16, 16), torch.bool)}),
}


@pytest.mark.parametrize("task", list(ITEM_FORMATS))
def test_batch_format(task: str, roots: dict[str, Path]) -> None:
    datamodule = make(task, roots, batch_size=2)
    input_shapes, others = ITEM_FORMATS[task]
    assert datamodule.input_sensors == tuple(input_shapes)
    loaders = (datamodule.train_dataloader(), datamodule.val_dataloader(),
               datamodule.test_dataloader())
    for loader in loaders:
        if not len(loader.dataset):  # the BigEarthNet fixture has no test patch
            continue
        batch = next(iter(loader))
        size = len(batch["target"])
        assert set(batch) == {"inputs", *others}
        assert list(batch["inputs"]) == list(input_shapes)
        for name, shape in input_shapes.items():
            assert batch["inputs"][name].shape == (size, *shape)
            assert batch["inputs"][name].dtype == torch.float32
            assert torch.isfinite(batch["inputs"][name]).all()
        for key, (shape, dtype) in others.items():
            assert batch[key].shape == (size, *shape) and batch[key].dtype == dtype
    statistics = datamodule.statistics()
    assert list(statistics) == list(input_shapes)
    for name, (mean, std) in statistics.items():
        assert mean.shape == std.shape == (input_shapes[name][0],)
        assert mean.dtype == std.dtype == torch.float32 and (std >= 1e-6).all()


def test_target_info(roots: dict[str, Path]) -> None:
    bigearthnet = make("bigearthnet", roots).target_info
    assert bigearthnet["num_classes"] == 19
    assert bigearthnet["class_names"] == tuple(BigEarthNet.class_sets[19])
    assert make("sen12ms_cr", roots).target_info | {"band_names": None} == {
        "task": "image_regression", "sensor": "sentinel2_l1c", "channels": 13,
        "band_names": None, "data_range": 1.0}
    spacenet2 = make("spacenet2", roots).target_info
    assert (spacenet2["sensor"], spacenet2["channels"], spacenet2["data_range"]) == (
        "worldview3_ms", 8, 2047.0)
    vaihingen = make("vaihingen", roots).target_info
    assert (vaihingen["num_classes"], vaihingen["ignore_index"]) == (6, 0)
    assert vaihingen["class_names"][0] == "Clutter/background"


def test_train_fraction_draws_a_seeded_subset(roots: dict[str, Path]) -> None:
    def subset(**kwargs: object) -> DownstreamDataModule:
        return make("bigearthnet", roots, statistics_samples=1, **kwargs)

    first = subset(train_fraction=0.1)
    assert len(first.train_indices) == round(0.1 * TRAIN_ROWS)
    assert len(first.train_dataloader().dataset) == len(first.train_indices)
    assert subset(train_fraction=0.1, seed=0).train_indices == first.train_indices
    assert subset(train_fraction=0.1, seed=1).train_indices != first.train_indices
    assert subset().train_indices == list(range(TRAIN_ROWS))
    # Vaihingen counts areas (two here): at least one is kept.
    vaihingen = make("vaihingen", roots, train_fraction=0.01, crops_per_area=3)
    assert len(vaihingen.train_indices) == 1 and len(vaihingen.datasets["train"]) == 3


@pytest.mark.parametrize("make_bad, message", [
    (lambda: BigEarthNetDataModule("x", sensors=("sentinel2_l1c",)),
     r"'sentinel2_l1c'.*sentinel1_grd, sentinel2_l2a"),
    (lambda: BigEarthNetDataModule("x", sensors=()), "sentinel1_grd, sentinel2_l2a"),
    (lambda: BigEarthNetDataModule("x", sensors=("sentinel1_grd", "sentinel1_grd")),
     "each once"),
    (lambda: SEN12MSCRDataModule("x", train_fraction=0.0), r"train_fraction .* got 0\.0"),
    (lambda: SpaceNet2DataModule("x", train_fraction=1.5), r"train_fraction .* got 1\.5"),
    (lambda: SpaceNet2DataModule("x", ratio=1), "ratio must be at least 2, got 1"),
    (lambda: VaihingenDataModule("x", batch_size=0), "batch_size must be at least 1, got 0"),
    (lambda: VaihingenDataModule("x", crops_per_area=0), "crops_per_area"),
    (lambda: VaihingenDataModule("x", val_areas=(2,)), r"val_areas \(2,\)"),
])
def test_bad_arguments(make_bad: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_bad()


def test_statistics_before_setup() -> None:
    with pytest.raises(RuntimeError, match="setup"):
        SEN12MSCRDataModule("x").statistics()


def test_bigearthnet_values_and_sensor_choice(roots: dict[str, Path]) -> None:
    datamodule = make("bigearthnet", roots, input_px=120)  # native: resizing is the identity
    batch = next(iter(datamodule.val_dataloader()))
    index = next(i for i, p in enumerate(bigearthnet_data.PATCHES) if p.split == "val")
    for band, polarization in enumerate(("VV", "VH")):  # float dB, in registry order
        expected = torch.from_numpy(bigearthnet_data.s1_values(index, polarization)[0])
        assert torch.equal(batch["inputs"]["sentinel1_grd"][0, band], expected)
    b02 = bigearthnet_data.s2_values(index, "B02")[0].astype(np.float32) * np.float32(1e-4)
    torch.testing.assert_close(batch["inputs"]["sentinel2_l2a"][0, 1], torch.from_numpy(b02))
    classes = BigEarthNet.class_sets[19]
    labels = bigearthnet_data.PATCHES[index].labels
    assert batch["target"][0].nonzero().flatten().tolist() == [classes.index(labels[0])]
    for sensors in (("sentinel1_grd",), ("sentinel2_l2a",)):
        single = make("bigearthnet", roots, sensors=sensors)
        assert list(next(iter(single.val_dataloader()))["inputs"]) == list(sensors)


def placements(crop: Tensor, full: Tensor) -> set[tuple[int, int, bool, bool]]:
    """Every (top, left, left-right flip, up-down flip) that cuts ``crop`` from ``full``."""
    size = crop.shape[-1]
    found = set()
    for top in range(full.shape[-2] - size + 1):
        for left in range(full.shape[-1] - size + 1):
            window = full[..., top:top + size, left:left + size]
            for fliplr in (False, True):
                for flipud in (False, True):
                    flipped = window.flip(-1) if fliplr else window
                    flipped = flipped.flip(-2) if flipud else flipped
                    if torch.allclose(flipped, crop):
                        found.add((top, left, fliplr, flipud))
    return found


def test_sen12ms_cr_crops_and_flips_inputs_and_target_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("sen12ms_cr", roots, batch_size=1)
    source = datamodule.datasets["train"].source
    samples = [source[i] for i in range(len(source))]
    flips_seen = set()
    for _ in range(4):
        for item in datamodule.datasets["train"]:
            matches = [placements(item["inputs"]["sentinel2_l1c"], s["image_s2_cloudy"])
                       for s in samples]
            index = next(i for i, found in enumerate(matches) if found)
            where = matches[index]
            assert len(where) == 1
            assert placements(item["inputs"]["sentinel1_grd"], samples[index]["image_s1"]) == where
            assert placements(item["target"], samples[index]["target"]) == where
            flips_seen |= {flips for *_, flips in [(*w[:2], w[2:]) for w in where]}
    assert len(flips_seen) > 1
    # Validation: the centre crop.
    val = datamodule.datasets["val"][0]
    values = sen12ms_cr_data.triplet_values(splits=True)[VAL_TRIPLET]
    start = (sen12ms_cr_data.SIZE - SEN12MS_CR_PX) // 2
    window = slice(start, start + SEN12MS_CR_PX)
    assert torch.equal(val["inputs"]["sentinel1_grd"],
                       torch.from_numpy(values["s1"][:, window, window]))
    expected = values["s2"][:, window, window].astype(np.float32) * np.float32(1e-4)
    assert torch.equal(val["target"], torch.from_numpy(expected))


def test_missing_inputs_become_the_training_mean(tmp_path: Path,
                                                 sen12ms_cr_root: Path) -> None:
    root = shutil.copytree(sen12ms_cr_root, tmp_path / "copy")
    values = sen12ms_cr_data.triplet_values(splits=True)[VAL_TRIPLET]
    values["s1"][1, 8, 8] = np.nan  # nodata of S1
    values["s2_cloudy"][3, 9, 7] = 0  # nodata of S2
    for modality in ("s1", "s2_cloudy"):
        path = sen12ms_cr_data.triplet_path(root, *VAL_TRIPLET, modality)
        write_geotiff(path, values[modality], sen12ms_cr_data.CRS,
                      Affine(*sen12ms_cr_data.TRANSFORM))
    datamodule = SEN12MSCRDataModule(root, input_px=SEN12MS_CR_PX)
    datamodule.setup("validate")
    item = datamodule.datasets["val"][0]
    statistics = datamodule.statistics()
    start = (sen12ms_cr_data.SIZE - SEN12MS_CR_PX) // 2
    assert item["inputs"]["sentinel1_grd"][1, 8 - start, 8 - start] == \
        statistics["sentinel1_grd"][0][1]
    assert item["inputs"]["sentinel2_l1c"][3, 9 - start, 7 - start] == \
        statistics["sentinel2_l1c"][0][3]
    assert torch.isfinite(item["inputs"]["sentinel1_grd"]).all()


def test_wald_degradation_is_an_area_mean() -> None:
    pan = torch.rand(1, 48, 48)
    ms = torch.rand(8, 12, 12)
    pan_low, ms_low, ms_up = wald_degradation(pan, ms, 4)
    torch.testing.assert_close(pan_low, pan.reshape(1, 12, 4, 12, 4).mean((2, 4)))
    torch.testing.assert_close(ms_low, ms.reshape(8, 3, 4, 3, 4).mean((2, 4)))
    assert ms_up.shape == ms.shape
    torch.testing.assert_close(ms_up.mean(), ms_low.mean(), atol=0.05, rtol=0)
    # The real grids: PAN 650 px (162.5 MS pixels) goes exactly onto the 163-px MS grid.
    shapes = [t.shape for t in wald_degradation(torch.zeros(1, 650, 650),
                                                torch.zeros(8, 163, 163), 4)]
    assert shapes == [(1, 163, 163), (8, 40, 40), (8, 163, 163)]
    with pytest.raises(ValueError, match="ratio 4"):
        wald_degradation(pan, torch.rand(8, 3, 3), 4)


def test_spacenet2_pads_and_flips_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("spacenet2", roots)
    chips = spacenet2_data.chip_values(split_images=True)
    ms_px = spacenet2_data.MS_PX
    real = (..., slice(0, ms_px), slice(0, ms_px))

    def expected(chip: tuple[str, int]) -> dict[str, Tensor]:
        pan = torch.from_numpy(chips[chip]["PAN"].astype(np.float32))
        ms = torch.from_numpy(chips[chip]["MUL"].astype(np.float32))
        pan_low, ms_low, ms_up = wald_degradation(pan, ms, 4)
        return {"worldview3_pan": pan_low, "worldview3_ms": ms_up, "target": ms,
                "ms_low": ms_low}

    val = datamodule.datasets["val"][0]
    reference = expected(SPACENET_VAL)
    assert val["valid"].sum() == ms_px * ms_px and val["valid"][real].all()
    for key, values in reference.items():
        item = val["inputs"][key] if key.startswith("worldview3") else val[key]
        assert torch.equal(item[..., :values.shape[-2], :values.shape[-1]], values)
    assert torch.equal(val["target"][:, ms_px:], val["target"][:, ms_px - 1:ms_px].expand(
        -1, SPACENET_PX - ms_px, -1))  # bottom padding replicates the last row
    assert torch.equal(val["pan_low"], val["inputs"]["worldview3_pan"])
    flips_seen = set()
    train_chips = spacenet2_data.AOIS
    for _ in range(4):
        for item, index in zip(datamodule.datasets["train"], datamodule.train_indices,
                               strict=True):
            aoi, image = datamodule.datasets["train"].source.chips[index]
            assert aoi in train_chips
            reference = expected((aoi, image))
            found = placements(item["target"][real], reference["target"])
            assert len(found) == 1
            for key in ("worldview3_pan", "worldview3_ms"):
                assert placements(item["inputs"][key][real], reference[key]) == found
            low_px = ms_px // 4
            assert placements(item["ms_low"][..., :low_px, :low_px], reference["ms_low"]) == found
            flips_seen |= found
    assert len(flips_seen) > 1


def test_vaihingen_crops_inputs_and_mask_alike(roots: dict[str, Path]) -> None:
    torch.manual_seed(0)
    datamodule = make("vaihingen", roots, crops_per_area=4)
    area = datamodule.datasets["train"].source[0]
    dsm = area["dsm"] - area["dsm"].min()  # heights above the area's lowest pixel
    assert len(datamodule.datasets["train"]) == 2 * 4
    seen = set()
    for item in datamodule.datasets["train"]:
        where = placements(item["inputs"]["cir"], area["image"])
        assert len(where) == 1
        assert placements(item["inputs"]["dsm"], dsm) == where
        assert where <= placements(item["target"], area["mask"])
        assert item["valid"].all()
        seen |= where
    assert len(seen) > 1


def test_vaihingen_tiles_count_each_pixel_once(roots: dict[str, Path]) -> None:
    datamodule = make("vaihingen", roots)
    assert tile_origins(24, 16) == [(0, 0), (8, 16)] and tile_origins(32, 16) == [(0, 0),
                                                                                 (16, 16)]
    test = datamodule.datasets["test"]
    area = test.source[0]
    height, width = area["mask"].shape
    counts = torch.zeros(height, width, dtype=torch.long)
    stitched = torch.full((height, width), -1)
    batches = list(datamodule.test_dataloader())
    tiles = [(r, c) for r, _ in tile_origins(height, VAIHINGEN_PX)
             for c, _ in tile_origins(width, VAIHINGEN_PX)]
    assert sum(len(b["target"]) for b in batches) == len(tiles)
    items = [(b["target"][i], b["valid"][i, 0], b["inputs"]["cir"][i])
             for b in batches for i in range(len(b["target"]))]
    for (top, left), (target, valid, cir) in zip(tiles, items, strict=True):
        window = (slice(top, top + VAIHINGEN_PX), slice(left, left + VAIHINGEN_PX))
        assert torch.equal(cir, area["image"][(..., *window)])
        counts[window] += valid
        stitched[window] = torch.where(valid, target, stitched[window])
    assert (counts == 1).all()
    assert torch.equal(stitched, area["mask"])
    # Without val_areas, validation is the test split.
    assert datamodule.datasets["val"].items == test.items


def test_vaihingen_val_areas_are_held_out(roots: dict[str, Path]) -> None:
    datamodule = make("vaihingen", roots, val_areas=[EXTRA_TRAIN_AREA], crops_per_area=2)
    root = roots["vaihingen"]
    assert [f["image"] for f in datamodule.datasets["train"].source.files] == [
        vaihingen_data.area_path(root, 1, "cir")]
    assert [f["image"] for f in datamodule.datasets["val"].source.files] == [
        vaihingen_data.area_path(root, EXTRA_TRAIN_AREA, "cir")]
    assert len(datamodule.datasets["train"]) == 2 and len(datamodule.datasets["val"]) == 4
    absent = VaihingenDataModule(roots["vaihingen"], input_px=VAIHINGEN_PX, val_areas=[5])
    with pytest.raises(ValueError, match=r"val_areas \[5\]"):
        absent.setup("fit")


def test_vaihingen_statistics(roots: dict[str, Path]) -> None:
    statistics = make("vaihingen", roots).statistics()
    cir = vaihingen_data.cir_values(1).reshape(3, -1).astype(np.float64)  # areas 1 and 3 alike
    torch.testing.assert_close(statistics["cir"][0], torch.from_numpy(cir.mean(1)).float())
    torch.testing.assert_close(statistics["cir"][1], torch.from_numpy(cir.std(1)).float())
    dsm = vaihingen_data.dsm_values(1).astype(np.float64)
    torch.testing.assert_close(statistics["dsm"][0],
                               torch.tensor([dsm.mean() - dsm.min()], dtype=torch.float32))
