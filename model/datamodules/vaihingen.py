"""ISPRS Vaihingen semantic segmentation data module."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from catalogs.layouts.vaihingen import area_of
from catalogs.sensors import get_sensor
from model.datamodules.augmentation import SampleCrop, SampleFlips
from model.datamodules.base import (
    INPUTS,
    TARGET,
    VALID,
    DownstreamDataModule,
    Item,
    Sample,
    relative_to_lowest,
)
from model.datasets.raster_files import opened_raster
from model.datasets.vaihingen import VaihingenDSM


def tile_origins(length: int, tile: int) -> list[tuple[int, int]]:
    """Non-overlapping tiles covering ``length`` pixels; the last shifted to end at the border.

    Args:
        length: pixels to cover.
        tile: pixels per tile.

    Returns:
        ``(origin, first_new)`` per tile: where it starts, and its first pixel that no earlier
        tile covers (only the shifted last tile has ``first_new > origin``)

    Raises:
        ValueError: if ``length`` is smaller than ``tile``.
    """
    if length < tile:
        raise ValueError(f"{length} pixels are fewer than one {tile}-pixel tile")
    return [(min(start, length - tile), start) for start in range(0, length, tile)]


class VaihingenDataModule(DownstreamDataModule):
    """ISPRS Vaihingen semantic segmentation (6 classes) from the IR-R-G orthophoto and the DSM.

    Over :class:`~model.datasets.VaihingenDSM`. Inputs: ``cir`` (IR-R-G digital numbers 0-255)
    and ``dsm``, heights in metres relative to the area's lowest valid DSM pixel (a per-area
    offset, the same for every crop and tile of an area; terrain relief stays in). Training
    draws ``crops_per_area`` random ``input_px`` (P) crops per area and epoch, with random flips
    (the same for inputs, target and ``valid``). Validation and test cut each area into a grid
    of non-overlapping P x P tiles, the last row and column shifted inward to end at the border;
    ``valid`` marks each pixel once (False where a shifted tile overlaps the tile before it), so
    metrics over ``valid`` count every pixel of the area exactly once. The units of
    ``train_fraction`` are areas.

    Splits: ``train`` the 16 areas with released ground truth, ``test`` the other 17; ``val``
    is ``test`` unless ``val_areas`` names training areas to hold out for validation.

    Batch: ``inputs`` ``cir`` (B, 3, P, P) and ``dsm`` (B, 1, P, P); ``target`` (B, P, P)
    int64 class indices 0-5 (0 clutter/background, ignored by the metrics but kept);
    ``valid`` (B, 1, P, P) bool (all True in training).
    """

    # Input sensor -> the VaihingenDSM sample key it comes from.
    input_keys: ClassVar[dict[str, str]] = {"cir": "image", "dsm": "dsm"}
    relative_inputs: ClassVar[tuple[str, ...]] = ("dsm",)
    class_names: ClassVar[tuple[str, ...]] = VaihingenDSM.classes
    ignore_index: ClassVar[int] = 0
    # Only the target is cropped with the inputs: ``valid`` is made per item.
    spatial_keys: ClassVar[tuple[str, ...]] = (TARGET,)

    def __init__(
        self,
        root: Path | str,
        crops_per_area: int = 8,
        val_areas: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        """Initialise a new VaihingenDataModule.

        Args:
            root: the folder holding ``top``, ``dsm`` and the ground truth.
            crops_per_area: random training crops per area and epoch.
            val_areas: training areas held out (from ``train``) as the ``val`` split; None:
                ``val`` is the ``test`` split.
            **kwargs: the common arguments of :class:`DownstreamDataModule`.

        Raises:
            ValueError: if ``crops_per_area`` is below 1, ``val_areas`` is empty or names
                areas that are not training areas, or a common argument is out of its range.
        """
        if crops_per_area < 1:
            raise ValueError(f"crops_per_area must be at least 1, got {crops_per_area}")
        if val_areas is not None:
            val_areas = tuple(val_areas)
            others = sorted(set(val_areas) - VaihingenDSM.split_areas["train"])
            if not val_areas or others:
                raise ValueError(
                    f"val_areas {val_areas!r}: choose among the training areas "
                    f"{sorted(VaihingenDSM.split_areas['train'])}"
                )
        super().__init__(root, **kwargs)
        self.crops_per_area = crops_per_area
        self.val_areas = val_areas
        self.crop = SampleCrop(self.input_px, self.spatial_keys)
        self.flips = SampleFlips(self.spatial_keys)

    @property
    def target_info(self) -> dict[str, Any]:
        """Semantic segmentation over :attr:`class_names`, class 0 ignored."""
        return {
            "task": "semantic_segmentation",
            "num_classes": len(self.class_names),
            "ignore_index": self.ignore_index,
            "class_names": self.class_names,
        }

    def _area_of(self, files: dict[str, Path]) -> int:
        """The area number of an entry of :attr:`VaihingenDSM.files`."""
        area = area_of(Path(files["image"]).name, VaihingenDSM.top_file)
        assert area is not None, files["image"]  # VaihingenDSM lists only such files
        return area

    def _open(self, split: str) -> VaihingenDSM:
        if self.val_areas is None:
            return VaihingenDSM(self.root, split="test" if split == "val" else split)
        if split == "test":
            return VaihingenDSM(self.root, split="test")
        dataset = VaihingenDSM(self.root, split="train")
        absent = sorted(set(self.val_areas) - {self._area_of(f) for f in dataset.files})
        if absent:
            raise ValueError(
                f"{self.root}: no orthophoto, DSM and ground truth of val_areas {absent}"
            )
        held_out = split == "val"
        dataset.files = [
            files for files in dataset.files if (self._area_of(files) in self.val_areas) == held_out
        ]
        return dataset

    def _convert(self, raw: dict[str, Tensor]) -> Sample:
        inputs = {name: raw[key] for name, key in self.input_keys.items()}
        for name in self.relative_inputs:
            inputs[name] = relative_to_lowest(inputs[name], get_sensor(name))
        # The class indices as float32 (exact) until the view: kornia crops floats as they
        # are, where it would convert an integer mask of the whole area for every crop.
        return {INPUTS: inputs, TARGET: raw["mask"].float()}

    def _train_items(self, indices: Sequence[int]) -> list[Item]:
        return [(index, None) for index in indices for _ in range(self.crops_per_area)]

    def _eval_items(self, source: Dataset[dict[str, Tensor]]) -> list[Item]:
        assert isinstance(source, VaihingenDSM)
        items: list[Item] = []
        for index, files in enumerate(source.files):
            height, width = self._raster_shape(files["image"])
            for top, new_top in tile_origins(height, self.input_px):
                for left, new_left in tile_origins(width, self.input_px):
                    items.append((index, (top, left, new_top, new_left)))
        return items

    @staticmethod
    def _raster_shape(path: Path) -> tuple[int, int]:
        with opened_raster(path) as src:
            return src.height, src.width

    def _train_view(self, sample: Sample, key: Any) -> Sample:
        valid = torch.ones((1, self.input_px, self.input_px), dtype=torch.bool)
        return self._item(self.flips(self.crop.random(sample)), valid)

    def _eval_view(self, sample: Sample, key: tuple[int, int, int, int]) -> Sample:
        top, left, new_top, new_left = key
        valid = torch.zeros((1, self.input_px, self.input_px), dtype=torch.bool)
        valid[:, new_top - top :, new_left - left :] = True
        return self._item(self.crop.at(sample, top, left), valid)

    @staticmethod
    def _item(cut: Sample, valid: Tensor) -> Sample:
        """A crop or tile with its target as int64 class indices and its ``valid`` mask."""
        return dict(cut, **{TARGET: cut[TARGET].long(), VALID: valid})
