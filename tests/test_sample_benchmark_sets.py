"""Benchmark-size downstream sets: split counts, the dataset classes, determinism and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest
from torchgeo.datasets import BigEarthNet

from catalogs.sample import benchmark
from catalogs.sample.downstream import BENCHMARK, DownstreamSizes, scene_triplets
from model.datasets import SEN12MSCR, SpaceNet2PanMS, VaihingenDSM

# Every split of every set, small enough to render in seconds (BENCHMARK takes minutes).
SMALL = DownstreamSizes(
    bigearthnet_patches={"train": 2, "val": 1, "test": 1},
    sen12ms_cr_triplets=scene_triplets(
        {("ROIs1158_spring", 11): 2, ("ROIs2017_winter", 22): 1, ("ROIs1158_spring", 106): 1}
    ),
    spacenet2_images=(1, 8, 9),
    vaihingen_areas=(1, 2),
)
TINY = DownstreamSizes(
    bigearthnet_patches={"train": 1, "val": 0, "test": 0},
    sen12ms_cr_triplets=(("ROIs1868_summer", 3, 0),),
    spacenet2_images=(1,),
    vaihingen_areas=(1,),
)


def _split_counts(sizes: DownstreamSizes) -> dict[str, dict[str, int]]:
    """Samples per set and split that ``sizes`` should give, by each dataset class's rule."""

    def cr_split(folder: str, scene: int) -> str:
        return next(
            (
                split
                for split, scenes in SEN12MSCR.split_scenes.items()
                if (folder, scene) in scenes
            ),
            "train",
        )

    return {
        "bigearthnet": dict(sizes.bigearthnet_patches),
        "sen12ms-cr": {
            split: sum(
                cr_split(folder, scene) == split for folder, scene, _ in sizes.sen12ms_cr_triplets
            )
            for split in SEN12MSCR.splits
        },
        "spacenet2": {
            split: sum(
                k % SpaceNet2PanMS.split_modulus in remainders for k in sizes.spacenet2_images
            )
            for split, remainders in SpaceNet2PanMS.split_remainders.items()
        },
        "vaihingen": {
            split: len(areas & set(sizes.vaihingen_areas))
            for split, areas in VaihingenDSM.split_areas.items()
        },
    }


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The downstream sets of seed 0 at :data:`SMALL` sizes (read-only for tests)."""
    return benchmark.render_downstream_sets(tmp_path_factory.mktemp("small") / "sets", sizes=SMALL)


def test_benchmark_sizes_follow_each_split_rule() -> None:
    assert _split_counts(BENCHMARK) == {
        "bigearthnet": {"train": 64, "val": 16, "test": 48},
        "sen12ms-cr": {"train": 32, "val": 4, "test": 12},
        "spacenet2": {"train": 40, "val": 5, "test": 5},
        "vaihingen": {"train": 6, "test": 4},
    }
    assert BENCHMARK.vaihingen_areas == (1, 2, 3, 4, 5, 6, 7, 8, 11, 13)


def test_small_sizes_fill_every_split() -> None:
    counts = _split_counts(SMALL)
    assert all(n > 0 for splits in counts.values() for n in splits.values()), counts


def test_sets_lie_in_the_sample_world_folders(small_sets: Path) -> None:
    assert sorted(p.name for p in small_sets.iterdir()) == sorted(benchmark.DOWNSTREAM_WRITERS)
    assert not list(small_sets.parent.glob(".sets.*"))  # no staging folder left behind


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_bigearthnet_opens_with_torchgeo(small_sets: Path, split: str) -> None:
    dataset = BigEarthNet(small_sets / "bigearthnet", split=split, bands="all", num_classes=19)
    assert len(dataset) == _split_counts(SMALL)["bigearthnet"][split]
    sample = dataset[0]
    assert sample["image"].shape == (14, 120, 120)
    assert sample["label"].shape == (19,) and sample["label"].sum() >= 1


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_sen12ms_cr_opens(small_sets: Path, split: str) -> None:
    dataset = SEN12MSCR(small_sets / "sen12ms-cr", split=split)
    assert len(dataset) == _split_counts(SMALL)["sen12ms-cr"][split]
    sample = dataset[0]
    assert sample["image_s1"].shape == (2, 256, 256)
    assert sample["image_s2_cloudy"].shape == sample["target"].shape == (13, 256, 256)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_spacenet2_opens(small_sets: Path, split: str) -> None:
    dataset = SpaceNet2PanMS(small_sets / "spacenet2", split=split, buildings=True)
    assert len(dataset) == _split_counts(SMALL)["spacenet2"][split]
    assert dataset[0]["mask"].float().mean() > 0.05  # built-up ground: buildings to find


@pytest.mark.parametrize("split", ["train", "test"])
def test_vaihingen_opens(small_sets: Path, split: str) -> None:
    dataset = VaihingenDSM(small_sets / "vaihingen", split=split)
    assert len(dataset) == _split_counts(SMALL)["vaihingen"][split]
    assert len(dataset[0]["mask"].unique()) >= 3


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = benchmark.render_downstream_sets(tmp_path / "first", seed=3, sizes=TINY)
    second = benchmark.render_downstream_sets(tmp_path / "second", seed=3, sizes=TINY)
    expected = _hashes(first)
    assert len(expected) > 20
    assert _hashes(second) == expected


def test_cli_sample_sizes_are_the_sample_worlds_sets(
    sample_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "downstream"
    (out / "stale").mkdir(parents=True)
    assert benchmark.main(["--out", str(out), "--sizes", "sample", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(benchmark.DOWNSTREAM_WRITERS)
    for name in benchmark.DOWNSTREAM_WRITERS:
        assert _hashes(out / name) == _hashes(sample_world / "raw" / name), name
    files = sum(1 for p in out.rglob("*") if p.is_file())
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"downstream sets \(sample sizes, seed 0\): {files} files, "
        rf"[\d.]+ MB, [\d.]+ s -> {re.escape(str(out))}",
        last_line,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bigearthnet_patches": {"train": 1, "val": 1}}, "each of train, val, test"),
        ({"bigearthnet_patches": {"train": 0, "val": 0, "test": 0}}, "counts no patch"),
        ({"vaihingen_areas": ()}, "vaihingen_areas is empty"),
        ({"spacenet2_images": (1, 1)}, "spacenet2_images lists an entry twice"),
    ],
)
def test_bad_sizes_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)
