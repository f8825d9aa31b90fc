"""Benchmark-size downstream sets of the sample world: ``python -m catalogs.sample.benchmark``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from catalogs.atomic_files import atomic_folder
from catalogs.sample import rendered_summary
from catalogs.sample.downstream import (
    BENCHMARK,
    SAMPLE,
    DownstreamSizes,
    write_bigearthnet,
    write_sen12ms_cr,
    write_spacenet2,
    write_vaihingen,
)
from catalogs.sample.world import World

# Folder under the output (the same as under the sample world's raw/) -> writer of that layout.
DOWNSTREAM_WRITERS: dict[str, Callable[[World, Path, DownstreamSizes], None]] = {
    "bigearthnet": write_bigearthnet,
    "sen12ms-cr": write_sen12ms_cr,
    "spacenet2": write_spacenet2,
    "vaihingen": write_vaihingen,
}
# The sizes the command line can name.
NAMED_SIZES: dict[str, DownstreamSizes] = {"benchmark": BENCHMARK, "sample": SAMPLE}


def render_downstream_sets(
    out: Path | str, seed: int = 0, sizes: DownstreamSizes = BENCHMARK, progress: bool = False
) -> Path:
    """Render the sample world's downstream sets at ``sizes`` into ``out/<set>``.

    The sets are rendered in a temporary sibling folder and moved into place at the end, so
    ``out`` never holds half-written sets; an existing ``out`` is replaced. The same seed and
    sizes give byte-identical files.

    Args:
        out: the output folder; it gets one folder per key of :data:`DOWNSTREAM_WRITERS`.
        seed: the seed of the sample world.
        sizes: how much of each set to render.
        progress: show a progress bar.

    Returns:
        ``out``, resolved
    """
    out = Path(out).resolve()
    world = World(seed)
    with atomic_folder(out) as staging:
        sets = tqdm(DOWNSTREAM_WRITERS.items(), desc="rendering", unit="set", disable=not progress)
        for name, writer in sets:
            sets.set_postfix_str(name)
            writer(world, staging / name, sizes)
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, render the sets and print a summary line.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        the exit status
    """
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.sample.benchmark",
        description="Render the downstream sets of the embedded sample world at mini-benchmark "
        "size, each in its official layout under OUT/<set> for "
        f"{', '.join(DOWNSTREAM_WRITERS)}: BigEarthNet 64/16/48 patches (train/val/test), "
        "SEN12MS-CR 32/4/12 triplets (official val/test scenes), SpaceNet 2 images 1-50 "
        "(40/5/5 by image number), Vaihingen areas 1, 3, 5, 7, 11, 13 (train) and 2, 4, 6, 8 "
        "(test). Labels come from the same procedural ground as the pixels. No STAC catalog is "
        "written. The same seed gives byte-identical files.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (replaced as a whole once rendering succeeds)",
    )
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    parser.add_argument(
        "--sizes",
        choices=NAMED_SIZES,
        default="benchmark",
        help="benchmark (default) or sample: the tiny sets of "
        "`python -m catalogs.sample`, for a quick check",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = render_downstream_sets(
        args.out, seed=args.seed, sizes=NAMED_SIZES[args.sizes], progress=not args.quiet
    )
    print(
        f"downstream sets ({args.sizes} sizes, seed {args.seed}): "
        f"{rendered_summary(out, start)} -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
