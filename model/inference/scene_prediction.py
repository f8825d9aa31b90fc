"""Whole-scene inference: tiles read in a DataLoader, predicted, blended and streamed to a COG.

What each task writes (chosen by its target's ``task`` in the model card):

* ``semantic_segmentation``: class indices (uint8, nodata 255) with the class colour table;
  on request the per-class probabilities (uint8, ``value / 254``, nodata 255) in a second COG.
* ``image_regression`` (cloud removal, pan-sharpening): the target sensor's bands in the
  registry's storage dtype and scale (Sentinel-2 reflectance x 10,000 as uint16; WorldView-3
  digital numbers), on the reference grid (PAN's for pan-sharpening).
* ``multilabel_classification``: a coarse map, one pixel per cell of ``cell_px`` reference
  pixels, each the class probabilities (uint8, ``value / 254``, nodata 255) of a tile centred
  on it.

Dense predictions are blended across tile overlaps (:mod:`model.inference.tiles`); a pixel where
any input sensor lacks data has no data in the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from catalogs.grid import Grid
from catalogs.item_assets import Radiometry, to_storage
from catalogs.scene_reading import kept_open
from catalogs.sensors import get_sensor
from model.inference.cog import CogWriter, OutputBands, writing_env
from model.inference.scene_inputs import (
    SceneSources,
    SceneTiles,
    scene_sources,
    with_relative_offsets,
)
from model.inference.tiles import CellLayout, CellRows, StripBlender, TileLayout
from model.tasks.segmentation import ISPRS_COLOURS

Backend = Callable[[dict[str, np.ndarray]], np.ndarray]
PROBABILITY_NODATA = 255
PROBABILITY_STEPS = 254.0  # probabilities stored as round(p * 254): 255 stays free for nodata
CLASS_NODATA = 255


def default_workers(cpus: int | None = None) -> int:
    """Reading workers for a machine of ``cpus`` cores (default: this one's).

    None on two cores or fewer: measured on 2 cores (the bench's 768 px scene), reading in the
    network's process took 1.6-1.8 s where one worker took 2.3-2.4 s (its start and its share of
    the cores cost more than the reads it hides); with more cores, a worker per four, up to 4.
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if (cpus or 1) <= 2 else min(4, max(1, cpus // 4))


@dataclass(frozen=True)
class TilingOptions:
    """How a scene is cut and batched.

    Attributes:
        overlap_px: least overlap of neighbouring tiles (dense tasks); None: a quarter tile.
        margin_px: pixels at a tile's inner sides that get no weight; None: a quarter overlap.
        cell_px: cell of the coarse map (classification); None: half a tile.
        batch_size: tiles per forward pass.
        num_workers: DataLoader processes reading tiles (0: read in this process); by default
            :func:`default_workers`.
    """

    overlap_px: int | None = None
    margin_px: int | None = None
    cell_px: int | None = None
    batch_size: int = 8
    num_workers: int = field(default_factory=lambda: default_workers())


@dataclass(frozen=True)
class ScenePrediction:
    """What :func:`predict_scene` wrote.

    Attributes:
        path: the COG.
        probabilities: the probabilities' COG, where asked for.
        grid: the output's grid.
        tiles: tiles predicted.
        scene_shape: (rows, cols) of the reference grid.
    """

    path: Path
    probabilities: Path | None
    grid: Grid
    tiles: int
    scene_shape: tuple[int, int]


def predict_scene(
    model: Any,
    backend: Backend,
    items: Sequence[Mapping[str, Any]],
    out: Path | str,
    options: TilingOptions = TilingOptions(),
    probabilities: Path | str | None = None,
    progress: bool = False,
) -> ScenePrediction:
    """Predict one scene with a fine-tuned model and write the result as a COG.

    Args:
        model: the fine-tuned model (:class:`model.finetuned.FinetunedModel`): its input
            sensors, normalisation, target and input size.
        backend: runs the network: ``{sensor: (B, C, P, P) float32} -> (B, K, ...)``.
        items: the reference item first, then its partners, asset hrefs absolute.
        out: the COG to write.
        options: tiling and batching.
        probabilities: for segmentation, a second COG of the class probabilities.
        progress: show a progress bar counting tiles.

    Returns:
        What was written.

    Raises:
        SceneInputError: when the items cannot give the model's inputs.
        ValueError: for tiling options that do not fit the tile size, or probabilities asked of a
            task that has none to give.
    """
    tile_px = int(model.input_px)
    output = scene_output(model.target_info)
    if probabilities is not None and output.kind != "classes":
        raise ValueError("probabilities: only a segmentation model has per-pixel classes")
    # Rasters stay open across tiles (in this process and in each forked reading worker).
    with kept_open(), writing_env():
        sources = scene_sources(items, model.input_sensors, tile_px)
        sources = with_relative_offsets(sources, model.relative_inputs)
        layout, sink, grid = _layout(output, sources, tile_px, options)
        means = {sensor: mean for sensor, (mean, _) in model.task.normalisation.items()}
        tiles = SceneTiles(sources, list(layout.windows()), tile_px, means)
        loader = DataLoader(
            tiles,
            batch_size=options.batch_size,
            num_workers=options.num_workers,
            worker_init_fn=_one_thread,
        )
        paths = _predict_tiles(
            loader,
            tiles,
            sink,
            output,
            backend,
            model.input_sensors,
            out,
            probabilities,
            grid,
            progress,
        )
    return ScenePrediction(
        paths[0], paths[1] if len(paths) > 1 else None, grid, len(tiles), sources.grid.shape
    )


def _predict_tiles(
    loader: DataLoader,
    tiles: SceneTiles,
    sink: StripBlender | CellRows,
    output: SceneOutput,
    backend: Backend,
    sensors: Sequence[str],
    out: Path | str,
    probabilities: Path | str | None,
    grid: Grid,
    progress: bool,
) -> list[Path]:
    """Run every batch of ``loader`` and write the COG(s) as rows become final."""
    writers = [CogWriter(out, grid, output.bands)]
    if probabilities is not None:
        writers.append(CogWriter(probabilities, grid, _probability_bands(output.class_names)))
    try:
        with tqdm(total=len(tiles), unit="tile", disable=not progress) as bar:
            for batch in loader:
                inputs = {s: batch["inputs"][s].numpy() for s in sensors}
                predictions = output.activate(backend(inputs))
                for index, prediction, valid in zip(
                    batch["index"].tolist(), predictions, batch["valid"].numpy(), strict=True
                ):
                    final = sink.add(tiles.windows[index], prediction, valid)
                    if final is not None:
                        writers[0].write(final.row, output.encode(final.values), final.valid)
                        if len(writers) > 1:
                            writers[1].write(
                                final.row, _probability_values(final.values), final.valid
                            )
                bar.update(len(predictions))
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return [writer.close() for writer in writers]


@dataclass(frozen=True)
class SceneOutput:
    """How a task's network output becomes the COG's bands.

    Attributes:
        kind: ``classes``, ``image`` or ``labels``.
        channels: channels of the activated prediction.
        bands: the COG's bands.
        activate: network output -> what is blended (probabilities, physical values).
        encode: blended (channels, rows, cols) -> the COG's (bands, rows, cols).
        class_names: the classes of a class map (empty for an image).
    """

    kind: str
    channels: int
    bands: OutputBands
    activate: Callable[[np.ndarray], np.ndarray]
    encode: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...] = ()


def scene_output(target: Mapping[str, Any]) -> SceneOutput:
    """The output of a task from its target description (``target_info`` of the model card).

    Raises:
        ValueError: naming the task, for a target this module cannot map.
    """
    task = target.get("task")
    if task == "semantic_segmentation":
        names = tuple(str(n) for n in target["class_names"])
        colours = {k: (*ISPRS_COLOURS[k], 255) for k in range(min(len(names), len(ISPRS_COLOURS)))}
        return SceneOutput(
            "classes",
            len(names),
            OutputBands(
                ("class",),
                "uint8",
                CLASS_NODATA,
                overview_resampling="nearest",
                colormap=colours,
                tags={"classes": ",".join(names)},
            ),
            lambda logits: torch.from_numpy(logits).softmax(dim=1).numpy(),
            lambda probabilities: probabilities.argmax(axis=0)[None].astype(np.uint8),
            names,
        )
    if task == "image_regression":
        sensor = get_sensor(str(target["sensor"]))
        return SceneOutput(
            "image",
            sensor.num_bands,
            OutputBands(
                sensor.band_names,
                np.dtype(sensor.dtype).name,
                sensor.nodata,
                scale=sensor.scale,
                offset=sensor.offset,
                tags={"sensor": sensor.name},
            ),
            lambda image: image,
            lambda image: to_storage(image, Radiometry(1.0, 0.0, None), sensor)[0],
        )
    if task == "multilabel_classification":
        names = tuple(str(n) for n in target["class_names"])
        return SceneOutput(
            "labels",
            len(names),
            _probability_bands(names),
            lambda logits: torch.from_numpy(logits).sigmoid().numpy(),
            _probability_values,
            names,
        )
    raise ValueError(f"no scene output for a target of task {task!r}")


def _probability_bands(names: Sequence[str]) -> OutputBands:
    return OutputBands(
        tuple(names),
        "uint8",
        PROBABILITY_NODATA,
        scale=1.0 / PROBABILITY_STEPS,
    )


def _probability_values(probabilities: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(probabilities, 0.0, 1.0) * PROBABILITY_STEPS).astype(np.uint8)


def _layout(
    output: SceneOutput, sources: SceneSources, tile_px: int, options: TilingOptions
) -> tuple[TileLayout | CellLayout, StripBlender | CellRows, Grid]:
    """The tiles, the sink that assembles their predictions, and the output grid."""
    shape = sources.grid.shape
    if output.kind == "labels":
        cell_px = options.cell_px or tile_px // 2
        layout = CellLayout(shape, tile_px, cell_px)
        return layout, CellRows(layout, output.channels), sources.grid.coarsened(cell_px)
    overlap_px = tile_px // 4 if options.overlap_px is None else options.overlap_px
    margin_px = overlap_px // 4 if options.margin_px is None else options.margin_px
    tiles = TileLayout(shape, tile_px, overlap_px, margin_px)
    return tiles, StripBlender(tiles, output.channels), sources.grid


def _one_thread(worker: int) -> None:
    """Reading workers leave the cores to the network: one torch thread each."""
    torch.set_num_threads(1)
