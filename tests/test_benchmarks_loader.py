"""``python -m model.benchmarks loader``: its input is built once, and it reports every figure."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numcodecs.blosc
import numpy as np
import pytest
import torch

from catalogs.store_format import ITEM_ID, open_store
from model.benchmarks.__main__ import main
from model.benchmarks.loader import (
    Rate,
    interleaved,
    one_thread_per_process,
    paired_dataset,
    time_decode_bound,
    time_ours,
)
from model.benchmarks.scene_store import ensure_scene_store


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
    again = ensure_scene_store(
        bench_dir, scenes=2, scene_px=256, progress=lambda line: pytest.fail(f"rebuilt: {line}")
    )
    assert again == built and (built.store / "zarr.json").stat().st_mtime_ns == stamp


def test_timings_count_the_samples_they_read(bench_dir: Path) -> None:
    dataset = paired_dataset(ensure_scene_store(bench_dir, 2, 256, progress=print).store)
    ours = time_ours(dataset, passes=3, batch_size=2, num_workers=0)
    assert ours.samples == 6 and ours.seconds > 0 and ours.cpu_seconds > 0
    workers = time_ours(dataset, passes=2, batch_size=1, num_workers=1)
    assert workers.samples == 4 and workers.cpu_seconds > 0
    bound = time_decode_bound(dataset, passes=5)
    assert bound.samples == 10 and bound.per_s > 0 and bound.per_cpu_s > 0


def test_runs_are_interleaved_and_threads_restored() -> None:
    order: list[str] = []

    def run(name: str) -> Callable[[], Rate]:
        def measure() -> Rate:
            order.append(name)
            assert numcodecs.blosc.use_threads is False and torch.get_num_threads() == 1
            return Rate(1, 1.0)

        return measure

    threads = torch.get_num_threads()
    with one_thread_per_process():
        rates = interleaved({"a": run("a"), "b": run("b")}, rounds=3)
    assert order == ["a", "b"] * 3 and [len(r) for r in rates.values()] == [3, 3]
    assert torch.get_num_threads() == threads


def test_the_report_ends_with_the_json_figures(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "loader",
                "--scenes",
                "2",
                "--scene-px",
                "256",
                "--bench-dir",
                str(bench_dir),
                "--samples",
                "8",
                "--torchgeo-samples",
                "6",
                "--batch-size",
                "2",
                "--workers",
                "1",
                "--repeats",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert "2 Sentinel-2 + Sentinel-1 pairs of 256 px cut from 2 source scenes" in lines[0]
    figures = json.loads(lines[-1])
    assert set(figures) == {
        "ours_samples_per_s",
        "ours_samples_per_s_1_worker",
        "ours_samples_per_s_2_workers",
        "ours_samples_per_s_2_workers_pinned",
        "ours_samples_per_s_model_unit",
        "torchgeo_samples_per_s",
        "decode_bound_samples_per_s",
        "ratio_vs_torchgeo",
        "ratio_vs_decode_bound",
        "ratio_2_workers_vs_main",
        "ratio_2_workers_vs_1_worker",
        "ours_samples_per_cpu_s",
        "ours_samples_per_cpu_s_2_workers",
    }
    pinned = figures.pop("ours_samples_per_s_2_workers_pinned")
    assert (pinned is None) == (not torch.cuda.is_available())
    assert all(value > 0 for value in figures.values())
    assert sum("interleaved rounds" in line for line in lines) == 1
    np.testing.assert_allclose(
        figures["ratio_2_workers_vs_1_worker"],
        figures["ours_samples_per_s_2_workers"] / figures["ours_samples_per_s_1_worker"],
        rtol=0.02,
    )
    np.testing.assert_allclose(
        figures["ratio_vs_torchgeo"],
        figures["ours_samples_per_s"] / figures["torchgeo_samples_per_s"],
        rtol=0.02,
    )
    np.testing.assert_allclose(
        figures["ratio_vs_decode_bound"],
        figures["ours_samples_per_s"] / figures["decode_bound_samples_per_s"],
        rtol=0.02,
    )


def test_store_and_catalog_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["loader", "--store", "data/geopile2.zarr"])
    assert "--store and --catalog go together" in capsys.readouterr().err
