"""Command line of the model benchmarks: ``python -m model.benchmarks loader|model|predict``.

``loader`` times the GeoPile-2 loader against the TorchGeo user's path and the decode bound;
``model`` times msGFM training, the MoE layer and the encoder against timm; ``predict`` times
whole-scene inference against the bare network forward and measures its memory. ``--help`` of
each says what it measures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from model.benchmarks.loader import (
    Rate,
    interleaved,
    one_thread_per_process,
    paired_dataset,
    time_decode_bound,
    time_ours,
)
from model.benchmarks.network import encoder_vs_timm_seconds, train_rate
from model.benchmarks.predict import HELP as PREDICT_HELP
from model.benchmarks.predict import run_predict_bench
from model.benchmarks.scene_store import ensure_scene_store
from model.benchmarks.torchgeo_path import paired_source_files, torchgeo_pairs_per_s
from model.datasets.geopile2 import GeoPile2
from model.inference.scene_prediction import default_workers
from model.nn.encoder import PRESETS, encoder_config
from model.nn.moe import moe_vs_dense_seconds
from model.tasks import TASKS

LOADER_HELP = """\
Measures, in one run on the same paired Sentinel-2 + Sentinel-1 chips (one pair = one sample,
256 px):
  (a) ours      GeoPile2 (Sentinel-2 chips with their Sentinel-1 partner) through a plain
                DataLoader with collate_by_sensor, shuffled, as pretraining loads them: chips
                as stored (uint16 Sentinel-2, float32 dB Sentinel-1), converted to the
                model's unit on the device: in the main process, with one worker process
                and with --workers; with a CUDA GPU, also --workers with pin_memory; and, in
                the main process, converted to float32 in the model's unit on the CPU (what
                GeoPile2 gives by default); each chunk's CRC32C checked (--no-verify: not);
  (b) TorchGeo  what a TorchGeo user does without our store: an IntersectionDataset of a
                Sentinel-2 and a Sentinel-1 RasterDataset over the source COGs (Sentinel-1
                warped onto the Sentinel-2 grid on the fly) with RandomGeoSampler at the same
                chip size, in the main process (float32, as TorchGeo returns them);
  (c) decode    the same chunks' compressed bytes, in memory, decoded by the store's own
      bound     codec into reused buffers in a tight loop.
Every process decodes with one thread: the bench sets numcodecs.blosc.use_threads = False
(Blosc's single-threaded context in every process; zarr sets it too on import) and
torch.set_num_threads(1) in the main process (DataLoader workers run with one torch thread).
So the main-process figure and the decode bound use one core, and N workers N cores.
The runs are interleaved, --repeats rounds of (a) (b) (c) in turn; each figure is the median
of its rounds, with their range, beside samples per CPU-second (CPU time of the main process
and its workers: the per-core rate, whatever else runs on the machine).
The input: --scenes x --scale scene-sized (--scene-px) Sentinel-2 L2A + Sentinel-1 scenes
rendered from the sample world (cached under --bench-dir) and the GeoPile-2 store that
`python -m pipeline run` builds from them (cached beside them; about 30 s the first time).
--store and --catalog measure any other build instead, e.g. the sample store of `dvc repro`
(--store data/geopile2.zarr --catalog data/sample/catalog.json: SEN12MS-style 256 px patch
files, where TorchGeo reads whole small files). Prints each figure, the ratios a/b and a/c,
the workers' speed-ups and, as its last line, one JSON object of medians:
  {"ours_samples_per_s", "ours_samples_per_s_1_worker", "ours_samples_per_s_2_workers",
   "ours_samples_per_s_2_workers_pinned" (null without a CUDA GPU),
   "ours_samples_per_s_model_unit", "torchgeo_samples_per_s",
   "decode_bound_samples_per_s", "ratio_vs_torchgeo", "ratio_vs_decode_bound",
   "ratio_2_workers_vs_main", "ratio_2_workers_vs_1_worker", "ours_samples_per_cpu_s",
   "ours_samples_per_cpu_s_2_workers"}
("2_workers" keys hold the --workers runs.)
"""

MODEL_HELP = """\
Measures on the CPU, in one run, with the --preset encoder (default tiny) at --input-px:
  training images/s   msGFM forward + backward + AdamW step, one sub-batch of --batch-per-sensor
                      chips for each of Sentinel-2 (paired with Sentinel-1), Sentinel-1, RGB, DSM;
  MoE vs dense        the sparse MoE layer's forward + backward time over a dense timm Mlp of the
                      same active FLOPs, at the width and token count of the preset's MoE stage;
  encoder vs timm     our dense encoder (an RGB patch embedding, timm's Swin V2 stages) over timm's
                      SwinTransformerV2.forward_features of the same configuration, forward +
                      backward.
Ratios are our time over the reference's. With a CUDA GPU it also reports Swin-B (the base
preset) training images/s in bf16 and the model FLOPs utilisation. The last line is one JSON
object: {"train_images_per_s", "moe_vs_dense_ratio", "encoder_vs_timm_ratio"}.
"""


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m model.benchmarks loader|model`` (``python -m model bench`` forwards here).

    Args:
        argv: the arguments after the command (default: ``sys.argv[1:]``).

    Returns:
        The exit status, 0; argparse exits with 2 on bad arguments.
    """
    parser = argparse.ArgumentParser(
        prog="python -m model.benchmarks", description="Benchmarks of the model side."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    loader = commands.add_parser(
        "loader",
        help="GeoPile-2 loader vs TorchGeo vs decode bound",
        description=LOADER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    loader.add_argument(
        "--scenes", type=int, default=8, help="scenes at scale 1 (default 8: 128 pairs of 256 px)"
    )
    loader.add_argument(
        "--scale", type=int, default=1, help="multiply the input: scenes x scale (default 1)"
    )
    loader.add_argument(
        "--scene-px", type=int, default=1024, help="side of a scene in 10 m pixels (default 1024)"
    )
    loader.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("data/bench"),
        help="scene and store cache (default: data/bench)",
    )
    loader.add_argument(
        "--store",
        type=Path,
        default=None,
        help="measure this GeoPile-2 store instead (with --catalog)",
    )
    loader.add_argument(
        "--catalog",
        type=Path,
        default=None,
        help="the STAC catalog --store was built from (its source COGs)",
    )
    loader.add_argument(
        "--samples",
        type=int,
        default=2048,
        help="pairs each run of ours and the decode bound reads, at least one pass (default 2048)",
    )
    loader.add_argument(
        "--torchgeo-samples",
        type=int,
        default=160,
        help="pairs the TorchGeo path reads (default 160)",
    )
    loader.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    loader.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes of the multi-worker runs of ours (default 2)",
    )
    loader.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of every run (default 3)"
    )
    loader.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    loader.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="read chips without checking their CRC32C (GeoPile2's verify=False)",
    )
    network = commands.add_parser(
        "model",
        help="msGFM training speed, MoE vs dense, vs timm",
        description=MODEL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    network.add_argument(
        "--preset", choices=sorted(PRESETS), default="tiny", help="encoder preset (default: tiny)"
    )
    network.add_argument("--input-px", type=int, default=192, help="input side (default 192)")
    network.add_argument(
        "--batch-per-sensor",
        type=int,
        default=16,
        help="chips per sensor and step (default 16, as tiny-sample.yaml trains)",
    )
    network.add_argument(
        "--repeats", type=int, default=3, help="timed steps; the fastest counts (default 3)"
    )
    scene = commands.add_parser(
        "predict",
        help="scene inference vs the bare forward; peak RSS at 1x and 4x the area; ONNX",
        description=PREDICT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scene.add_argument(
        "--task", choices=sorted(TASKS), default="segmentation", help="default: segmentation"
    )
    scene.add_argument(
        "--model", type=Path, help="a fine-tuned model (default: the task's at random init)"
    )
    scene.add_argument(
        "--bench-dir",
        type=Path,
        default=Path("data/bench/predict"),
        help="scene cache and outputs (default: data/bench/predict)",
    )
    scene.add_argument(
        "--scene-px", type=int, default=768, help="side of the 1x scene (default 768)"
    )
    scene.add_argument("--batch-size", type=int, default=8, help="tiles per batch (default 8)")
    scene.add_argument(
        "--num-workers",
        type=int,
        default=default_workers(),
        help=f"reading worker processes (default on this machine: {default_workers()})",
    )
    scene.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of each run (default 3)"
    )
    args = parser.parse_args(argv)
    if args.command == "model":
        return run_model(args)
    if args.command == "predict":
        figures = run_predict_bench(
            args.task,
            args.model,
            args.bench_dir,
            args.scene_px,
            args.batch_size,
            args.num_workers,
            args.repeats,
        )
        print(json.dumps(figures))
        return 0
    if (args.store is None) != (args.catalog is None):
        parser.error("--store and --catalog go together")
    if min(args.scenes, args.scale, args.samples, args.batch_size, args.repeats) < 1:
        parser.error("--scenes, --scale, --samples, --batch-size and --repeats must be at least 1")
    return run_loader(args)


def run_loader(args: argparse.Namespace) -> int:
    """Run the loader benchmark of ``args`` (see :data:`LOADER_HELP`); print the report."""
    store, catalog = args.store, args.catalog
    if store is None:
        built = ensure_scene_store(
            args.bench_dir,
            args.scenes * args.scale,
            args.scene_px,
            args.seed,
            progress=lambda line: print(line, file=sys.stderr),
        )
        store, catalog = built.store, built.catalog
    dataset = paired_dataset(store, verify=args.verify, stored=True)
    converting = paired_dataset(store, verify=args.verify)
    chip_px = dataset.chip_reader(dataset.sensors[0]).layout.chip_shape[-1]
    files = paired_source_files(store, catalog)
    passes = max(1, math.ceil(args.samples / len(dataset)))
    print(
        f"loader benchmark: {store}: {len(dataset)} Sentinel-2 + Sentinel-1 pairs of "
        f"{chip_px} px cut from {len(files)} source scenes; batch {args.batch_size}; "
        f"checksums {'verified' if args.verify else 'not verified'}; one decoder and torch "
        f"thread per process; {args.repeats} interleaved rounds"
    )
    torchgeo_samples = max(args.batch_size + 1, args.torchgeo_samples // args.repeats)

    def ours(workers: int, pinned: bool = False, data: GeoPile2 = dataset) -> Callable[[], Rate]:
        return lambda: time_ours(data, passes, args.batch_size, workers, args.seed, pinned)

    def torchgeo() -> Rate:
        timing = torchgeo_pairs_per_s(
            files,
            chip_px=chip_px,
            samples=torchgeo_samples,
            batch_size=args.batch_size,
            num_workers=0,
            seed=args.seed,
        )
        return Rate(timing.samples, timing.seconds)

    runs = {
        "(a) ours, main process": ours(0),
        "(a) ours, 1 worker": ours(1),
        f"(a) ours, {args.workers} workers": ours(args.workers),
    }
    if torch.cuda.is_available():  # pin_memory pins only with an accelerator
        runs[f"(a) ours, {args.workers} workers, pinned"] = ours(args.workers, pinned=True)
    runs["(a) ours, float32 on the CPU, main"] = ours(0, data=converting)
    runs |= {
        "(b) TorchGeo paired path": torchgeo,
        "(c) decode bound": lambda: time_decode_bound(dataset, passes),
    }
    with one_thread_per_process():
        rates = interleaved(runs, args.repeats)
    for label, rounds in rates.items():
        per_s = [rate.per_s for rate in rounds]
        per_cpu = [rate.per_cpu_s for rate in rounds if rate.per_cpu_s is not None]
        print(
            f"{label:36s} {statistics.median(per_s):9.1f} samples/s (range "
            f"{min(per_s):.1f}-{max(per_s):.1f}; {rounds[0].samples} a round)"
            + (f", {statistics.median(per_cpu):7.1f} per CPU-second" if per_cpu else "")
        )
    median = {
        label: statistics.median(rate.per_s for rate in rounds) for label, rounds in rates.items()
    }
    main_s, one_s, many_s = (median[label] for label in list(runs)[:3])
    pinned_s = median.get(f"(a) ours, {args.workers} workers, pinned")
    torchgeo_s, bound_s = median["(b) TorchGeo paired path"], median["(c) decode bound"]
    model_unit_s = median["(a) ours, float32 on the CPU, main"]
    print(f"ours / TorchGeo      {main_s / torchgeo_s:6.1f}x")
    print(
        f"ours / decode bound  {main_s / bound_s:6.2f} (float32 on the CPU: "
        f"{model_unit_s / bound_s:.2f})"
    )
    print(
        f"{args.workers} workers / main process {many_s / main_s:5.2f}x, / 1 worker "
        f"{many_s / one_s:5.2f}x"
    )
    per_cpu = [
        statistics.median(r.per_cpu_s for r in rates[label])
        for label in (list(runs)[0], list(runs)[2])
    ]
    print(
        json.dumps(
            {
                "ours_samples_per_s": round(main_s, 1),
                "ours_samples_per_s_1_worker": round(one_s, 1),
                "ours_samples_per_s_2_workers": round(many_s, 1),
                "ours_samples_per_s_2_workers_pinned": None
                if pinned_s is None
                else round(pinned_s, 1),
                "ours_samples_per_s_model_unit": round(model_unit_s, 1),
                "torchgeo_samples_per_s": round(torchgeo_s, 1),
                "decode_bound_samples_per_s": round(bound_s, 1),
                "ratio_vs_torchgeo": round(main_s / torchgeo_s, 2),
                "ratio_vs_decode_bound": round(main_s / bound_s, 3),
                "ratio_2_workers_vs_main": round(many_s / main_s, 3),
                "ratio_2_workers_vs_1_worker": round(many_s / one_s, 3),
                "ours_samples_per_cpu_s": round(per_cpu[0], 1),
                "ours_samples_per_cpu_s_2_workers": round(per_cpu[1], 1),
            }
        )
    )
    return 0


def run_model(args: argparse.Namespace) -> int:
    """Run the network benchmark of ``args`` (see :data:`MODEL_HELP`); print the report."""
    config = encoder_config(args.preset, input_px=args.input_px)
    moe = config.moe or encoder_config("tiny").moe
    stage = moe.stages[0]
    width = config.embed_dim * 2**stage
    tokens = args.batch_per_sensor * 4 * (args.input_px // (config.patch_px * 2**stage)) ** 2
    # The small layer benchmarks first: after a training run the allocator and thread pool
    # are in another state, which slowed the MoE layer's many small ops by up to 1.5x here.
    moe_s, dense_s = moe_vs_dense_seconds(
        dim=width,
        tokens=tokens,
        num_experts=moe.num_experts,
        top_k=moe.top_k,
        repeats=max(args.repeats, 5),
    )
    ours_s, timm_s = encoder_vs_timm_seconds(config, args.batch_per_sensor, args.repeats)
    rate = train_rate(config, args.batch_per_sensor, args.repeats, torch.device("cpu"))
    print(
        f"msGFM {args.preset} ({config.version}, MoE) at {args.input_px} px, "
        f"{torch.get_num_threads()} threads: {rate.images_per_s:.1f} training images/s"
    )
    print(
        f"MoE layer ({moe.num_experts} experts, top-{moe.top_k}, width {width}, {tokens} "
        f"tokens): {moe_s * 1e3:.2f} ms vs dense MLP {dense_s * 1e3:.2f} ms: "
        f"{moe_s / dense_s:.2f}x"
    )
    print(
        f"dense encoder: ours {ours_s * 1e3:.1f} ms vs timm {timm_s * 1e3:.1f} ms: "
        f"{ours_s / timm_s:.2f}x"
    )
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        base = train_rate(
            encoder_config("base", input_px=args.input_px), 64, args.repeats, gpu, bf16=True
        )
        mfu = f"{base.mfu:.1%}" if base.mfu is not None else "unknown peak"
        print(
            f"Swin-B msGFM bf16 on {torch.cuda.get_device_name(gpu)}: "
            f"{base.images_per_s:.1f} training images/s, MFU {mfu}"
        )
    print(
        json.dumps(
            {
                "train_images_per_s": round(rate.images_per_s, 2),
                "moe_vs_dense_ratio": round(moe_s / dense_s, 3),
                "encoder_vs_timm_ratio": round(ours_s / timm_s, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
