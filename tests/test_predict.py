"""Whole-scene inference end to end (model/predict.py, model/inference/): sample-world scenes of
the four tasks predicted by tiny untrained tasks into COGs on the reference grid."""

from __future__ import annotations

import filecmp
import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate
from torch import Tensor, nn

from catalogs.grid import Grid
from catalogs.sample.files import write_cog
from catalogs.sample.task_scenes import render_task_scene
from catalogs.scene_reading import open_raster, raster_sensors, sensor_block
from catalogs.sensors import get_sensor
from catalogs.stac import make_item, raster_asset
from model.datasets.units import to_model_unit
from model.export_onnx import export_onnx
from model.finetuned import export_finetuned, load_finetuned
from model.inference.backends import OnnxBackend, TorchBackend
from model.inference.scene_inputs import SceneTiles, read_item, scene_sources
from model.inference.scene_prediction import TilingOptions, predict_scene
from model.inference.tiles import TileLayout
from model.predict import main
from model.tasks.segmentation import ISPRS_COLOURS
from model.tasks.untrained import SETUPS, tiny_task
from pipeline.coregister import coregister_item
from pipeline.params import CoregisterParams, PipelineParams, SourceGrid
from tests.test_scene_tiles import conv_net

INPUT_PX = 64
OPTIONS = TilingOptions(batch_size=4, num_workers=0)
COVERAGE = 0.7  # the partner covers the left 70 % of the columns; a top-left block is nodata
SCENE_PX = {"segmentation": 128, "cloud_removal": 128, "pansharpening": 128, "classification": 160}
# The asset whose grid is the scene's reference grid: the finest raster of the reference item's
# input sensors (PAN, not MS; the 10 m Sentinel-2 bands).
REFERENCE_ASSET = {
    "segmentation": "cir",
    "cloud_removal": "s2_cloudy",
    "pansharpening": "pan",
    "classification": "s2",
}
PROPERTY_WINDOW = "msgfm:sample_nodata_window"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The four tasks' scenes: item paths, reference first."""
    root = tmp_path_factory.mktemp("scenes")
    return {
        task: render_task_scene(task, root / task, size_px, partner_coverage=COVERAGE)
        for task, size_px in SCENE_PX.items()
    }


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four tasks at random init, exported as fine-tuned models: their model cards."""
    root = tmp_path_factory.mktemp("models")
    return {
        task: export_finetuned(tiny_task(task, input_px=INPUT_PX), root / task) for task in SCENE_PX
    }


def _items(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_item(str(path)) for path in paths]


@pytest.fixture(scope="module")
def predictions(
    scenes: dict[str, list[Path]], cards: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Each task's scene predicted once by its tiny model (torch, one process)."""
    root = tmp_path_factory.mktemp("predictions")
    out = {}
    for task, paths in scenes.items():
        model = load_finetuned(cards[task])
        written = predict_scene(
            model, TorchBackend(model), _items(paths), root / f"{task}.tif", OPTIONS
        )
        out[task] = written.path
    return out


def _reference_grid(scene: list[Path], task: str) -> Grid:
    with rasterio.open(scene[0].parent / f"{REFERENCE_ASSET[task]}.tif") as src:
        return Grid(src.crs, src.transform, (src.height, src.width))


# --- 1. valid COGs on the reference grid, byte-identical on a second run ------------------------


@pytest.mark.parametrize("task", list(SCENE_PX))
def test_each_task_writes_a_cog_on_the_reference_grid(
    task: str,
    scenes: dict[str, list[Path]],
    cards: dict[str, Path],
    predictions: dict[str, Path],
    tmp_path: Path,
) -> None:
    path = predictions[task]
    assert cog_validate(path, quiet=True)[0]
    grid = _reference_grid(scenes[task], task)
    _, target, _ = SETUPS[task]
    with rasterio.open(path) as src:
        if task == "classification":
            cell_px = INPUT_PX // 2  # the default cell: half a tile
            transform = grid.transform * Affine.scale(cell_px)
            shape = tuple(math.ceil(n / cell_px) for n in grid.shape)
        else:
            transform, shape = grid.transform, grid.shape
        assert src.crs == grid.crs
        assert src.transform == transform
        assert (src.height, src.width) == shape
        if task == "segmentation":
            assert (src.count, src.dtypes[0], src.nodata) == (1, "uint8", 255)
            assert src.descriptions == ("class",)
            assert src.tags()["classes"] == ",".join(target["class_names"])
            colours = src.colormap(1)
            assert [colours[k] for k in range(6)] == [(*ISPRS_COLOURS[k], 255) for k in range(6)]
        elif task == "classification":
            names = tuple(target["class_names"])
            assert (src.count, src.dtypes[0], src.nodata) == (19, "uint8", 255)
            assert src.descriptions == names
            assert src.scales == (1 / 254,) * 19
        else:
            sensor = get_sensor(target["sensor"])
            assert src.count == sensor.num_bands
            assert (src.dtypes[0], src.nodata) == (np.dtype(sensor.dtype).name, sensor.nodata)
            assert src.descriptions == sensor.band_names
            assert src.tags()["sensor"] == sensor.name
            if task == "cloud_removal":
                assert src.scales == (1e-4,) * 13
        assert (src.dataset_mask() > 0).any()
    # Again, tiles read by a worker process: the same bytes.
    model = load_finetuned(cards[task])
    again = predict_scene(
        model,
        TorchBackend(model),
        _items(scenes[task]),
        tmp_path / "again.tif",
        TilingOptions(batch_size=4, num_workers=1),
    )
    assert filecmp.cmp(path, again.path, shallow=False)


# --- 2. nodata follows the inputs' coverage ---------------------------------------------------


def _all_sensors_valid(
    items: list[dict[str, Any]], sensors: tuple[str, ...], grid: Grid
) -> np.ndarray:
    """Where every sensor has data on ``grid``, each read as one block of the whole grid."""
    by_sensor: dict[str, list[Any]] = {}
    for item in items:
        for name, assets in raster_sensors(item).items():
            by_sensor.setdefault(name, []).extend(assets)
    valid = np.ones(grid.shape, dtype=bool)
    whole = Window(0, 0, grid.shape[1], grid.shape[0])
    for name in sensors:
        rasters = [
            open_raster(items[0]["id"], asset, max_raster_px=10**8, block_px=INPUT_PX)
            for asset in by_sensor[name]
        ]
        valid &= ~sensor_block(items[0]["id"], rasters, grid, whole).invalid
    return valid


@pytest.mark.parametrize("task", ["segmentation", "cloud_removal"])
def test_nodata_where_any_input_sensor_lacks_data(
    task: str, scenes: dict[str, list[Path]], predictions: dict[str, Path]
) -> None:
    items = _items(scenes[task])
    grid = _reference_grid(scenes[task], task)
    truth = _all_sensors_valid(items, SETUPS[task][0], grid)
    with rasterio.open(predictions[task]) as src:
        valid = src.dataset_mask() > 0
    assert 0.5 < truth.mean() < 0.9  # the partner's edge and the nodata block are in the scene
    row, col, rows, cols = items[0]["properties"][PROPERTY_WINDOW]
    assert not valid[row : row + rows, col : col + cols].any()
    # Exact also across CRSs (Sentinel-1 on UTM 33N, warped per tile): GDAL's approximate
    # transformer works per destination window, but on this scene no pixel at the partner's edge
    # falls differently.
    assert (valid == truth).all()


# --- 3. tiles read as the pipeline's coregister cuts chips ---------------------------------------


def test_tiles_hold_the_pixels_of_coregistered_chips(
    scenes: dict[str, list[Path]], cards: dict[str, Path]
) -> None:
    """Sentinel-2 L2A at 10/20/60 m and a Sentinel-1 partner on UTM 33N, read both ways."""
    reference, partner = _items(scenes["classification"])
    merged = {
        **reference,
        "collection": "paired",
        "assets": {**reference["assets"], **partner["assets"]},
    }
    params = PipelineParams(
        coregister=CoregisterParams(
            sources={"paired": SourceGrid("s2", chip_px=INPUT_PX, stride_px=48)},
            block_px=INPUT_PX,
            max_nodata_share=1.0,
        )
    )
    chips = coregister_item(merged, params)
    model = load_finetuned(cards["classification"])
    sources = scene_sources([reference, partner], model.input_sensors, INPUT_PX)
    layout = TileLayout(sources.grid.shape, INPUT_PX, 16, 4)
    assert layout.row_starts == [0, 48, 96]
    windows = list(layout.windows())
    means = {s: mean for s, (mean, _) in model.task.normalisation.items()}
    tiles = SceneTiles(sources, [*windows, (49, 48, INPUT_PX, INPUT_PX)], INPUT_PX, means)
    inverse = ~sources.grid.transform
    starts = [tuple(round(v) for v in inverse * (t[2], t[5]))[::-1] for t in chips.transforms]
    assert sorted(starts) == sorted((w[0], w[1]) for w in windows)
    compared = 0
    for index, (row, col) in enumerate(starts):
        tile = tiles[windows.index((row, col, INPUT_PX, INPUT_PX))]
        valid = tile["valid"]
        assert valid.any()
        for name in model.input_sensors:
            chip = to_model_unit(torch.from_numpy(chips.sensors[name][index]), get_sensor(name))
            assert torch.equal(chip[:, valid], tile["inputs"][name][:, valid])
        compared += int(valid.sum())
        if (row, col) == (48, 48):  # the test can fail: a window one pixel down differs
            shifted = tiles[len(windows)]
            both = valid & shifted["valid"]
            s2 = to_model_unit(
                torch.from_numpy(chips.sensors["sentinel2_l2a"][index]),
                get_sensor("sentinel2_l2a"),
            )
            assert not torch.equal(s2[:, both], shifted["inputs"]["sentinel2_l2a"][:, both])
    assert compared > 0.5 * len(windows) * INPUT_PX**2


# --- 4. tiled equals whole-image inference ---------------------------------------------------


@dataclass
class _Task:
    normalisation: dict[str, tuple[Tensor, Tensor]]


@dataclass
class _StubModel:
    """What predict_scene reads of a fine-tuned model: a DSM in, a DSM out."""

    relative_inputs: tuple[str, ...]
    input_px: int = INPUT_PX
    input_sensors: tuple[str, ...] = ("dsm",)
    target_info: dict[str, Any] = field(
        default_factory=lambda: {"task": "image_regression", "sensor": "dsm", "channels": 1}
    )
    task: _Task = field(
        default_factory=lambda: _Task({"dsm": (torch.tensor([3.5]), torch.tensor([1.0]))})
    )


class _NetBackend:
    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(inputs["dsm"])).numpy()


def test_tiled_prediction_equals_the_whole_image(
    scenes: dict[str, list[Path]], tmp_path: Path
) -> None:
    net = conv_net(1, 1)
    items = _items(scenes["segmentation"])
    model = _StubModel(relative_inputs=("dsm",))
    options = TilingOptions(overlap_px=16, margin_px=4, batch_size=4, num_workers=0)
    written = predict_scene(model, _NetBackend(net), items, tmp_path / "dsm.tif", options)
    with rasterio.open(scenes["segmentation"][0].parent / "dsm.tif") as src:
        dsm = src.read(1)
        dsm_grid = (src.transform, src.shape)
    with rasterio.open(written.path) as src:
        assert (src.transform, src.shape) == dsm_grid  # the only input sensor is the grid
        tiled = src.read(1)
        valid = src.dataset_mask() > 0
    present = dsm != get_sensor("dsm").nodata
    assert (valid == present).all()
    filled = np.where(present, dsm - dsm[present].min(), np.float32(3.5))
    with torch.no_grad():
        whole = net(torch.from_numpy(filled)[None, None])[0, 0].numpy()
    assert len(TileLayout(dsm.shape, INPUT_PX, 16, 4)) > 1
    assert np.abs(tiled - whole)[valid].max() < 1e-5


def test_a_constant_scene_gives_a_constant_prediction(tmp_path: Path) -> None:
    """No seams: the blend of identical tiles is the tiles' value."""
    value = np.float32(123.25)
    grid = Grid("EPSG:32632", Affine(0.5, 0, 500_000, 0, -0.5, 5_000_000), (150, 130))
    path = write_cog(tmp_path / "scene" / "dsm.tif", np.full((1, 150, 130), value), grid)
    item = make_item(
        "constant",
        {"dsm": raster_asset(path, get_sensor("dsm"))},
        datetime(2020, 6, 1, tzinfo=UTC),
        footprint_asset="dsm",
    )
    item_path = tmp_path / "scene" / "constant.json"
    item_path.write_text(json.dumps(item.to_dict(include_self_link=False)))

    def identity(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return inputs["dsm"]

    written = predict_scene(
        _StubModel(relative_inputs=()),
        identity,
        [read_item(str(item_path))],
        tmp_path / "out.tif",
        TilingOptions(overlap_px=16, margin_px=4, batch_size=4, num_workers=0),
    )
    assert written.tiles == 9
    with rasterio.open(written.path) as src:
        out = src.read(1)
        assert (src.dataset_mask() > 0).all()
    assert out.shape == (150, 130)
    assert np.abs(out - value).max() <= 1e-6 * value


# --- 5. a scene smaller than one tile --------------------------------------------------------


def test_a_scene_smaller_than_a_tile_is_padded_and_cropped(
    cards: dict[str, Path], tmp_path: Path
) -> None:
    paths = render_task_scene("segmentation", tmp_path / "scene", size_px=40)
    model = load_finetuned(cards["segmentation"])
    written = predict_scene(
        model, TorchBackend(model), _items(paths), tmp_path / "small.tif", OPTIONS
    )
    assert written.tiles == 1
    with rasterio.open(paths[0].parent / "cir.tif") as ref, rasterio.open(written.path) as src:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, (40, 40))
        assert (src.dataset_mask() > 0).all()
        assert src.read(1).max() < 6


# --- 6. the ONNX backend ------------------------------------------------------------------------


def test_onnx_backend_predicts_as_torch(
    scenes: dict[str, list[Path]],
    cards: dict[str, Path],
    predictions: dict[str, Path],
    tmp_path: Path,
) -> None:
    model = load_finetuned(cards["cloud_removal"])
    onnx = export_onnx(model, tmp_path / "model.onnx")
    written = predict_scene(
        model,
        OnnxBackend(onnx, model),
        _items(scenes["cloud_removal"]),
        tmp_path / "onnx.tif",
        OPTIONS,
    )
    with rasterio.open(predictions["cloud_removal"]) as a, rasterio.open(written.path) as b:
        torch_dn, onnx_dn = a.read().astype(np.int32), b.read().astype(np.int32)
        assert (a.dataset_mask() == b.dataset_mask()).all()
    assert np.abs(torch_dn - onnx_dn).max() <= 1
    assert (torch_dn == onnx_dn).mean() > 0.9


# --- 7. the command line ------------------------------------------------------------------------


def test_cli_writes_the_cog_the_quicklook_and_the_probabilities(
    scenes: dict[str, list[Path]],
    cards: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, png, prob = tmp_path / "map.tif", tmp_path / "map.png", tmp_path / "prob.tif"
    items = [str(p) for p in scenes["segmentation"]]
    argv = ["--model", str(cards["segmentation"]), "--items", *items, "--out", str(out)]
    argv += ["--quicklook", str(png), "--probabilities", str(prob)]
    assert main([*argv, "--batch-size", "4", "--num-workers", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 128 x 128 px, 9 tiles," in printed
    assert f"{prob}: class probabilities" in printed
    with rasterio.open(out) as src:
        classes = src.read(1)
        valid = src.dataset_mask() > 0
    picture = np.asarray(Image.open(png))
    assert Image.open(png).mode == "RGBA" and picture.shape == (128, 128, 4)
    assert ((picture[..., 3] > 0) == valid).all()
    assert (picture[..., 3][~valid] == 0).all() and (~valid).any()
    with rasterio.open(prob) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (6, "uint8", 255)
        assert cog_validate(prob, quiet=True)[0]
        probabilities = src.read()
        assert ((src.dataset_mask() > 0) == valid).all()
    # The class's stored probability is the largest (ties after rounding to 1/254 aside, argmax).
    top = np.take_along_axis(
        probabilities, np.where(valid, classes, 0)[None].astype(np.int64), axis=0
    )[0]
    assert (top == probabilities.max(axis=0))[valid].all()
    unique = (probabilities == probabilities.max(axis=0)).sum(axis=0) == 1
    assert (probabilities.argmax(axis=0) == classes)[valid & unique].all()


def test_cli_refuses_an_href_outside_the_item_folder_unless_allowed(
    cards: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (path,) = render_task_scene("segmentation", tmp_path / "elsewhere", size_px=40)
    record = json.loads(path.read_text())
    for asset in record["assets"].values():
        asset["href"] = "../elsewhere/" + asset["href"].removeprefix("./")
    moved = tmp_path / "items" / "item.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(record))
    argv = ["--model", str(cards["segmentation"]), "--items", str(moved), "--quiet"]
    argv += ["--out", str(tmp_path / "out.tif"), "--num-workers", "0"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "../elsewhere/cir.tif" in error and "--allowed-local-folder" in error
    assert not (tmp_path / "out.tif").exists()
    assert main([*argv, "--allowed-local-folder", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "out.tif").exists()


def test_cli_names_the_sensors_the_items_lack(
    scenes: dict[str, list[Path]],
    cards: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = [str(p) for p in scenes["cloud_removal"]]
    argv = ["--model", str(cards["segmentation"]), "--items", *items]
    assert main([*argv, "--out", str(tmp_path / "out.tif"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "['cir', 'dsm']" in error and "sentinel2_l1c" in error


def test_cli_onnx_backend_without_an_onnx_file(
    scenes: dict[str, list[Path]],
    cards: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = tmp_path / "model"
    shutil.copytree(cards["segmentation"].parent, model)
    items = [str(p) for p in scenes["segmentation"]]
    argv = ["--model", str(model), "--items", *items, "--backend", "onnx"]
    assert main([*argv, "--out", str(tmp_path / "out.tif"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert f"{model / 'model.onnx'}: no ONNX file" in error
    assert "python -m model.export_onnx" in error
