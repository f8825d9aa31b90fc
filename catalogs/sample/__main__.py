"""Command line: ``python -m catalogs.sample --out DIR [--seed N] [--pretraining small|corpus]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from catalogs.sample import WRITERS, build_sample, rendered_summary
from catalogs.sample.pretraining import NAMED_SIZES


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m catalogs.sample`` on ``argv``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.sample",
        description="Render the embedded sample world: one procedural world (land cover, "
        "terrain, buildings, water, clouds) seen by every sensor with its own physics, written "
        f"as the official layouts of {', '.join(WRITERS)} under DIR/raw/ with a static STAC "
        "catalog at DIR/catalog.json. The same seed gives byte-identical files.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default: 0)")
    parser.add_argument(
        "--pretraining",
        choices=NAMED_SIZES,
        default="small",
        help="size of the paired pretraining sources: small (default; 4 SEN12MS S1+S2 pairs and "
        "2 MDAS sub-areas, the tests' world) or corpus (32 pairs and 6 sub-areas, what `dvc "
        "repro` pretrains on)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    catalog = build_sample(
        args.out, seed=args.seed, pretraining=NAMED_SIZES[args.pretraining], progress=not args.quiet
    )
    print(
        f"sample world (seed {args.seed}, {args.pretraining} pretraining sources): "
        f"{rendered_summary(args.out, start)} -> {catalog}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
