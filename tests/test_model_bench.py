"""``python -m model.bench loader``: its input is built once, and it reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catalogs.store_format import ITEM_ID, open_store
from model.bench import main
from model.benchmark.loader import paired_dataset, time_decode_bound, time_ours
from model.benchmark.scene_store import ensure_scene_store


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loader-bench")


def test_the_scene_store_is_built_once_from_the_rendered_scenes(bench_dir: Path) -> None:
    built = ensure_scene_store(bench_dir, scenes=2, scene_px=256, progress=lambda _: None)
    items = open_store(built.store)["sentinel2_l2a"][ITEM_ID][:]
    assert sorted(set(items.tolist())) == ["bench_stacked_0000", "bench_stacked_0001"]
    dataset = paired_dataset(built.store)
    assert len(dataset) == 2 and dataset[0]["image_sentinel1_grd"].shape == (2, 256, 256)
    stamp = (built.store / "zarr.json").stat().st_mtime_ns
    again = ensure_scene_store(bench_dir, scenes=2, scene_px=256,
                               progress=lambda line: pytest.fail(f"rebuilt: {line}"))
    assert again == built and (built.store / "zarr.json").stat().st_mtime_ns == stamp


def test_timings_count_the_samples_they_read(bench_dir: Path) -> None:
    dataset = paired_dataset(ensure_scene_store(bench_dir, 2, 256, progress=print).store)
    ours = time_ours(dataset, passes=3, batch_size=2, num_workers=0)
    assert ours.samples == 6 and ours.seconds > 0
    bound = time_decode_bound(dataset, passes=5)
    assert bound.samples == 10 and bound.per_s > 0


def test_the_report_ends_with_the_json_figures(bench_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loader", "--scenes", "2", "--scene-px", "256", "--bench-dir", str(bench_dir),
                 "--samples", "8", "--torchgeo-samples", "6", "--batch-size", "2",
                 "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "2 Sentinel-2 + Sentinel-1 pairs of 256 px cut from 2 source scenes" in lines[0]
    figures = json.loads(lines[-1])
    assert set(figures) == {"ours_samples_per_s", "ours_samples_per_s_2_workers",
                            "torchgeo_samples_per_s", "decode_bound_samples_per_s",
                            "ratio_vs_torchgeo", "ratio_vs_decode_bound"}
    assert all(value > 0 for value in figures.values())
    np.testing.assert_allclose(figures["ratio_vs_torchgeo"], figures["ours_samples_per_s"]
                               / figures["torchgeo_samples_per_s"], rtol=0.02)
    np.testing.assert_allclose(figures["ratio_vs_decode_bound"], figures["ours_samples_per_s"]
                               / figures["decode_bound_samples_per_s"], rtol=0.02)


def test_store_and_catalog_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["loader", "--store", "data/geopile2.zarr"])
    assert "--store and --catalog go together" in capsys.readouterr().err
