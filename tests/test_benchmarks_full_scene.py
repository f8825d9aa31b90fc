"""``python -m pipeline.benchmarks --full-scene`` end to end on a small tile cut in several blocks:
the chips it counts, the blocked and whole-scene chip files being the same bytes, and a last
JSON line of positive figures (figures are not asserted: performance is read from the
command, never from tests)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from pipeline.benchmarks.full_scene import SUMMARY_KEYS
from pipeline.coregister import chip_blocks, chip_windows

REPO = Path(__file__).resolve().parents[1]
TILE_PX = 1024
BLOCK_PX = 512  # 2 x 2 blocks of 2 x 2 chips
CHIP_PX = 256


def test_full_scene_bench_on_a_small_tile(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.benchmarks",
            "--full-scene",
            "--full-scene-px",
            str(TILE_PX),
            "--block-px",
            str(BLOCK_PX),
            "--repeats",
            "1",
            "--bench-dir",
            str(tmp_path),
            "--params",
            str(REPO / "params.yaml"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert tuple(summary) == SUMMARY_KEYS

    windows = chip_windows((TILE_PX, TILE_PX), CHIP_PX, CHIP_PX)
    assert len(chip_blocks(windows, (TILE_PX, TILE_PX), CHIP_PX, BLOCK_PX)) > 1
    counts = next(
        re.search(r"(\d+) chip windows, (\d+) dropped \(nodata\), (\d+) chips kept", line)
        for line in lines
        if "chip windows" in line
    )
    assert counts is not None
    listed, dropped, kept = (int(n) for n in counts.groups())
    assert listed == len(windows)
    assert summary["chips"] == kept == len(windows) - dropped
    assert dropped == 0  # the Sentinel-1 scene covers the tile with a margin, without nodata
    assert any(
        line.startswith("chunk files byte-identical (blocked vs whole-scene read): yes")
        for line in lines
    )
    assert summary["peak_rss_mb_blocked"] > 0 and summary["peak_rss_mb_whole_scene"] > 0
    assert summary["full_scene_chips_per_s_per_core"] > 0
    assert summary["ratio_vs_warp_bound"] > 0
    assert not any((tmp_path / "full-scene" / "runs").iterdir())  # scratch removed
