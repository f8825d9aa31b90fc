"""Command line: ``python -m model.predict`` maps a whole scene with a fine-tuned model.

Reads every input sensor of the model from STAC items (a reference item and its partners, or one
item holding every sensor), tile by tile onto the reference grid, runs the network on overlapping
tiles, blends them and streams the result into a Cloud-Optimized GeoTIFF
(:mod:`model.inference.scene_prediction`). Memory follows the tile, the batch and the scene's
width, never its height.

The README's "Mapping a whole scene" runs it on a sample-world scene.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from model.inference.scene_inputs import SceneInputError, ScenePolicy, read_item
from model.inference.scene_prediction import TilingOptions, predict_scene
from model.inference.scene_search import DEFAULT_MAX_DAYS, find_scene_items

ONNX_FILE = "model.onnx"  # where ``--backend onnx`` looks beside the model's card by default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m model.predict",
        description="Map a whole scene with a fine-tuned msGFM model: read the sensors the "
        "model takes from STAC items, each at its own resolution and CRS, onto the reference "
        "grid, predict overlapping tiles, blend them without seams and write a "
        "Cloud-Optimized GeoTIFF. Segmentation writes class indices (uint8) with the class "
        "colours, cloud removal and pan-sharpening the target sensor's bands in the "
        "registry's storage dtype, classification a coarse map of class probabilities.",
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="a fine-tuning run's out_dir, its model/ folder or model/model_card.json",
    )
    scene = parser.add_argument_group(
        "the scene: --items, or a search of --catalog / --api-url with --collections and --bbox"
    )
    sources = scene.add_mutually_exclusive_group(required=True)
    sources.add_argument(
        "--items",
        nargs="+",
        metavar="ITEM",
        help="STAC item JSON files or http(s) URLs: the reference item first (its finest "
        "raster of an input sensor is the output grid), then partner items",
    )
    sources.add_argument("--catalog", help="a static STAC catalog (catalog.json path or URL)")
    sources.add_argument("--api-url", help="a STAC API")
    scene.add_argument(
        "--collections",
        nargs="+",
        help="the reference collection, then one per partner sensor (e.g. sentinel-2-l2a "
        "sentinel-1-rtc)",
    )
    scene.add_argument(
        "--bbox",
        nargs=4,
        type=float,
        metavar=("WEST", "SOUTH", "EAST", "NORTH"),
        help="the area to map, in degrees: the reference item covering most of it is taken",
    )
    scene.add_argument("--datetime", help="a datetime or interval, e.g. 2023-06 or a/b")
    scene.add_argument(
        "--max-days",
        type=float,
        default=DEFAULT_MAX_DAYS,
        help=f"partners at most this many days from the reference (default {DEFAULT_MAX_DAYS:g})",
    )
    parser.add_argument("--out", required=True, type=Path, help="the COG to write")
    parser.add_argument(
        "--probabilities",
        type=Path,
        help="segmentation: also write the class probabilities (uint8, value / 254) here",
    )
    parser.add_argument("--quicklook", type=Path, help="also draw the COG into this PNG")
    tiling = parser.add_argument_group("tiling")
    tiling.add_argument(
        "--overlap-px", type=int, help="least overlap of neighbouring tiles (default: tile / 4)"
    )
    tiling.add_argument(
        "--margin-px",
        type=int,
        help="pixels at a tile's inner sides left out of the blend (default: overlap / 4)",
    )
    tiling.add_argument(
        "--cell-px", type=int, help="classification: cell of the coarse map (default: tile / 2)"
    )
    tiling.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    tiling.add_argument(
        "--num-workers",
        type=int,
        help="DataLoader processes reading tiles (default: none on 2 cores or fewer, else one "
        "per 4 cores up to 4)",
    )
    running = parser.add_argument_group("backend")
    running.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    running.add_argument(
        "--onnx", type=Path, help=f"the ONNX file (default: {ONNX_FILE} beside the model card)"
    )
    running.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    running.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast on GPU"
    )
    policy = parser.add_argument_group("access policy (items are input, not instructions)")
    policy.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="let http(s) hrefs reach loopback and private addresses",
    )
    policy.add_argument(
        "--allow-local-files-from-remote",
        action="store_true",
        help="let an item read over the network name local files",
    )
    policy.add_argument(
        "--allowed-local-folder",
        action="append",
        default=[],
        help="a folder a local item may name files in besides its own (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.items is None and (not args.collections or args.bbox is None):
        parser.error("--catalog and --api-url search with --collections and --bbox")
    return args


def _scene_items(args: argparse.Namespace, policy: ScenePolicy) -> list[dict[str, Any]]:
    """The scene's items: those named, or those the search finds (reference first)."""
    if args.items is not None:
        return [read_item(source, policy) for source in args.items]
    try:
        return find_scene_items(
            args.api_url or args.catalog,
            api=args.api_url is not None,
            collections=args.collections,
            bbox=args.bbox,
            datetime=args.datetime,
            policy=policy,
            max_days=args.max_days,
        )
    except ValueError as error:
        raise SceneInputError(str(error)) from error


def main(argv: list[str] | None = None) -> int:
    """Predict one scene; returns 0, or 2 when the inputs cannot be used."""
    from model.finetuned import card_location, load_finetuned
    from model.inference.backends import OnnxBackend, TorchBackend
    from model.inference.quicklook import write_quicklook

    args = parse_args(argv)
    policy = ScenePolicy(
        args.allow_private_hosts,
        args.allow_local_files_from_remote,
        tuple(args.allowed_local_folder),
    )
    start = time.perf_counter()
    try:
        items = _scene_items(args, policy)
        model = load_finetuned(args.model)
        if args.backend == "onnx":
            onnx = args.onnx or card_location(args.model).parent / ONNX_FILE
            if not onnx.exists():
                raise SceneInputError(
                    f"{onnx}: no ONNX file; write it with "
                    f"`python -m model.export_onnx --model {args.model} --out {onnx}`"
                )
            backend = OnnxBackend(onnx, model)
        else:
            backend = TorchBackend(model, device=args.device, precision=args.precision)
        options = TilingOptions(args.overlap_px, args.margin_px, args.cell_px, args.batch_size)
        if args.num_workers is not None:
            options = replace(options, num_workers=args.num_workers)
        written = predict_scene(
            model, backend, items, args.out, options, args.probabilities, not args.quiet
        )
    except SceneInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    pixels = math.prod(written.scene_shape)
    print(
        f"{written.path}: {written.grid.shape[0]} x {written.grid.shape[1]} px, "
        f"{written.tiles} tiles, {seconds:.1f} s ({pixels / seconds:,.0f} scene px/s)"
    )
    if written.probabilities is not None:
        print(f"{written.probabilities}: class probabilities")
    if args.quicklook is not None:
        print(f"{write_quicklook(written.path, args.quicklook)}: quicklook")
    return 0


if __name__ == "__main__":
    sys.exit(main())
