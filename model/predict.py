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
from pathlib import Path

from model.inference.scene_inputs import SceneInputError, ScenePolicy, read_item
from model.inference.scene_prediction import TilingOptions, predict_scene

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
    parser.add_argument(
        "--items",
        nargs="+",
        required=True,
        metavar="ITEM",
        help="STAC item JSON files or http(s) URLs: the reference item first (its finest "
        "raster of an input sensor is the output grid), then partner items",
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
        "--num-workers", type=int, default=1, help="DataLoader processes reading tiles"
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
    return parser.parse_args(argv)


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
        items = [read_item(source, policy) for source in args.items]
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
        options = TilingOptions(
            args.overlap_px, args.margin_px, args.cell_px, args.batch_size, args.num_workers
        )
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
