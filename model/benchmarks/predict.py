"""The scene-inference bench: ``python -m model.benchmarks predict``.

Tiled inference of a sample-world scene (reading, normalising, network, blending, COG writing)
against the bare network forward on the same tiles already in memory (the bound), interleaved;
peak memory at 1x and 4x the scene's area, each in a fresh process; the 4x run's COG; and the
network's ONNX export checked against PyTorch.
"""

from __future__ import annotations

import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch

from catalogs.sample.task_scenes import render_task_scene
from model.benchmarks.loader import Rate, interleaved
from model.export_onnx import example_inputs, export_onnx, max_difference
from model.finetuned import export_finetuned, load_finetuned
from model.inference.backends import TorchBackend
from model.inference.scene_inputs import read_item
from model.inference.scene_prediction import TilingOptions, predict_scene
from model.tasks.untrained import tiny_task

HELP = """\
Measures, on the CPU, with a fine-tuned --task model (--model, or the tiny network of that task
at random init: the weights do not change the speed) on sample-world scenes of that task
(python -m catalogs.sample.task_scenes, cached under --bench-dir):
  predict   python -m model.predict's work on a --scene-px scene: tiles read by --num-workers
            DataLoader processes through the reading layer, normalised, predicted in batches of
            --batch-size, blended and written as a COG (with its overviews), in this process;
  forward   the bound: the same network on the same number of tiles, same batches, inputs
            already in memory.
Both as scene pixels per second (the overlap's extra tiles are in both), interleaved, --repeats
rounds of each; medians with their range, and pixels per CPU-second (this process and its
DataLoader workers). Then python -m model.predict in a fresh process on the scene and on one of
4x its area (2x a side), the peak memory of each (PSS of the process and its workers, summed,
sampled every 50 ms: a page the forked workers share counts once), and the
ONNX export of the network run by onnxruntime on one batch against PyTorch. The last line is
one JSON object: {"predict_pixels_per_s", "forward_bound_pixels_per_s", "ratio_vs_forward",
"peak_rss_mb_1x", "peak_rss_mb_4x", "cog_path", "onnx_max_abs_diff"}.
"""

BENCH_INPUT_PX = 192  # the input side of the sample fine-tuning configs
RSS_POLL_S = 0.05  # how often the memory of the predict process tree is sampled


def run_predict_bench(
    task: str,
    model_path: Path | None,
    bench_dir: Path,
    scene_px: int,
    batch_size: int,
    num_workers: int,
    repeats: int,
) -> dict[str, Any]:
    """Run the bench (see :data:`HELP`) and return the figures of its JSON line."""
    model_path = model_path or _untrained_model(task, bench_dir)
    model = load_finetuned(model_path)
    scene = _scene(task, bench_dir, scene_px)
    big_scene = _scene(task, bench_dir, 2 * scene_px)
    items = [read_item(str(path)) for path in scene]
    backend = TorchBackend(model)
    options = TilingOptions(batch_size=batch_size, num_workers=num_workers)
    out_dir = bench_dir / "out"
    probe = predict_scene(model, backend, items, out_dir / "probe.tif", options)
    pixels = math.prod(probe.scene_shape)
    print(
        f"scene {probe.scene_shape[0]} x {probe.scene_shape[1]} px, {probe.tiles} tiles of "
        f"{model.input_px} px (the network sees {probe.tiles * model.input_px**2 / pixels:.2f}x "
        f"the scene's pixels), batches of {batch_size}, {num_workers} reading worker(s), "
        f"{torch.get_num_threads()} torch threads; {repeats} interleaved rounds"
    )

    def predict() -> Rate:
        return _timed(
            pixels,
            lambda: predict_scene(model, backend, items, out_dir / "predict.tif", options),
        )

    tiles = {s: x.numpy() for s, x in example_inputs(model.task, batch_size).items()}

    def forward() -> Rate:
        def run() -> None:
            for start in range(0, probe.tiles, batch_size):
                count = min(batch_size, probe.tiles - start)
                backend({s: x[:count] for s, x in tiles.items()})

        return _timed(pixels, run)

    rates = interleaved({"predict": predict, "forward": forward}, repeats)
    for label, rounds in rates.items():
        per_s = [r.per_s for r in rounds]
        per_cpu = [r.per_cpu_s for r in rounds]
        print(
            f"{label:8s} {statistics.median(per_s):12,.0f} scene px/s (range "
            f"{min(per_s):,.0f}-{max(per_s):,.0f}), "
            f"{statistics.median(per_cpu):12,.0f} per CPU-second"
        )
    predict_rate = statistics.median(r.per_s for r in rates["predict"])
    forward_rate = statistics.median(r.per_s for r in rates["forward"])
    ratios = [p.per_s / f.per_s for p, f in zip(rates["predict"], rates["forward"], strict=True)]
    print(
        f"predict / forward: {statistics.median(ratios):.2f} "
        f"(per round {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    rss_1x = _peak_rss_mb(model_path, scene, out_dir / "scene-1x.tif", options)
    cog_path = out_dir / "scene-4x.tif"
    rss_4x = _peak_rss_mb(model_path, big_scene, cog_path, options)
    print(f"peak RSS: {rss_1x:.0f} MB at 1x, {rss_4x:.0f} MB at 4x ({rss_4x / rss_1x:.3f}x)")
    onnx_diff = max_difference(model, export_onnx(model, bench_dir / "model.onnx"))
    print(f"ONNX (onnxruntime) vs PyTorch on a batch of 2: max |difference| {onnx_diff:.2e}")
    return {
        "predict_pixels_per_s": predict_rate,
        "forward_bound_pixels_per_s": forward_rate,
        "ratio_vs_forward": statistics.median(ratios),
        "peak_rss_mb_1x": rss_1x,
        "peak_rss_mb_4x": rss_4x,
        "cog_path": str(cog_path),
        "onnx_max_abs_diff": onnx_diff,
    }


def _untrained_model(task: str, bench_dir: Path) -> Path:
    """The export of the task's tiny network at random init, at the sample configs' 192 px."""
    return export_finetuned(
        tiny_task(task, input_px=BENCH_INPUT_PX), bench_dir / f"untrained-{task}"
    )


def _scene(task: str, bench_dir: Path, scene_px: int) -> list[Path]:
    """The item files of the task's sample scene of ``scene_px``, rendered once."""
    folder = bench_dir / f"{task}-{scene_px}px"
    listing = folder / "items.txt"
    if not listing.exists():
        paths = render_task_scene(task, folder / "scene", size_px=scene_px)
        listing.write_text("\n".join(str(p) for p in paths))
    return [Path(line) for line in listing.read_text().splitlines()]


def _timed(pixels: int, run: Callable[[], object]) -> Rate:
    """Wall and CPU time of ``run`` (this process and the children it waited for)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    run()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = time.process_time() - cpu
    cpu_seconds += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Rate(pixels, seconds, cpu_seconds)


def _peak_rss_mb(model: Path, items: list[Path], out: Path, options: TilingOptions) -> float:
    """Peak memory of ``python -m model.predict`` in a fresh process, its workers included.

    The proportional set size (PSS: each shared page divided among the processes that map it,
    so forked workers' shared pages count once) of the process and its children, summed,
    sampled every :data:`RSS_POLL_S`; the largest sum.
    """
    command = [
        sys.executable,
        "-m",
        "model.predict",
        "--model",
        str(model),
        "--items",
        *map(str, items),
        "--out",
        str(out),
        "--batch-size",
        str(options.batch_size),
        "--num-workers",
        str(options.num_workers),
        "--quiet",
    ]
    peak = 0
    with subprocess.Popen(command, stdout=subprocess.DEVNULL) as process:
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            for member in [root, *root.children(recursive=True)]:
                try:
                    total += member.memory_full_info().pss
                except psutil.Error:  # a worker that just ended
                    continue
            peak = max(peak, total)
            time.sleep(RSS_POLL_S)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}")
    return peak / 2**20
