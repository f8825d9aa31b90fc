"""Shared fixtures, made once per test session: the sample world, and tiny copies of the four
downstream benchmarks in their official layouts (``roots``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from catalogs.sample import build_sample
from tests.data.bigearthnet import data as bigearthnet_data
from tests.data.downstream_benchmarks import EXTRA_TRAIN_AREA, L2A_TRIPLET, TRAIN_ROWS
from tests.data.sen12ms_cr import data as sen12ms_cr_data
from tests.data.spacenet2 import data as spacenet2_data
from tests.data.vaihingen import data as vaihingen_data


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample world of seed 0 (read-only for tests: copy before changing anything)."""
    out = tmp_path_factory.mktemp("sample") / "world"
    build_sample(out, seed=0)
    return out


@pytest.fixture(scope="session")
def bigearthnet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = bigearthnet_data.make_bigearthnet(tmp_path_factory.mktemp("bigearthnet"))
    train = [f"{p.s2},{p.s1}\n" for p in bigearthnet_data.PATCHES if p.split == "train"]
    (root / "bigearthnet-train.csv").write_text("".join(train * (TRAIN_ROWS // len(train))))
    return root


@pytest.fixture(scope="session")
def sen12ms_cr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = sen12ms_cr_data.make_sen12ms_cr(tmp_path_factory.mktemp("sen12ms_cr"), splits=True)
    for modality in sen12ms_cr_data.MODALITIES:
        sen12ms_cr_data.triplet_path(root, *L2A_TRIPLET, modality).unlink()
    return root


@pytest.fixture(scope="session")
def spacenet2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spacenet2_data.make_spacenet2(tmp_path_factory.mktemp("spacenet2"), split_images=True)


@pytest.fixture(scope="session")
def vaihingen_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = vaihingen_data.make_vaihingen(tmp_path_factory.mktemp("vaihingen"))
    for kind in ("cir", "dsm", "labels"):
        shutil.copy(
            vaihingen_data.area_path(root, 1, kind),
            vaihingen_data.area_path(root, EXTRA_TRAIN_AREA, kind),
        )
    return root


@pytest.fixture(scope="session")
def roots(
    bigearthnet_root: Path, sen12ms_cr_root: Path, spacenet2_root: Path, vaihingen_root: Path
) -> dict[str, Path]:
    return {
        "bigearthnet": bigearthnet_root,
        "sen12ms_cr": sen12ms_cr_root,
        "spacenet2": spacenet2_root,
        "vaihingen": vaihingen_root,
    }
