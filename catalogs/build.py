"""Build a static STAC catalog of a source dataset from a local copy in its official layout.

Example::

    python -m catalogs.build sen12ms --root /data/SEN12MS --out catalogs/out/sen12ms
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from catalogs.atomic_files import write_json
from catalogs.builders import BUILDERS
from catalogs.collections import source_collection, sources
from catalogs.stac import BuildResult, write_catalog


def build_catalog(
    roots: Mapping[str, Path], out: Path, sample: bool = False
) -> dict[str, BuildResult]:
    """Build one collection per ``{source: root}`` into one static catalog at ``out``.

    Skipped files are listed, with their reasons, in ``out/problems.json``.
    """
    results = {source: BUILDERS[source](Path(root)) for source, root in roots.items()}
    collections = [
        source_collection(source, result.items, sample=sample) for source, result in results.items()
    ]
    title = "GeoPile-2 sample world" if sample else "GeoPile-2 sources"
    write_catalog(
        out, collections, catalog_id="geopile2-sources", description=f"{title}: {', '.join(roots)}"
    )
    problems = [
        {"source": source, "path": p.path, "reason": p.reason}
        for source, result in results.items()
        for p in result.problems
    ]
    write_json(Path(out) / "problems.json", problems)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m catalogs.build`` on ``argv``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", choices=sorted(BUILDERS), help="which dataset layout ROOT holds")
    parser.add_argument(
        "--root", type=Path, required=True, help="the dataset's local copy, in its official layout"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the static catalog (catalog.json is written there)",
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: not a folder")
    layout = sources()[args.source]["layout"]
    result = build_catalog({args.source: args.root}, args.out)[args.source]
    for problem in result.problems:
        print(f"skipped {problem.path}: {problem.reason}", file=sys.stderr)
    print(
        f"{args.source}: {len(result.items)} items, {len(result.problems)} files skipped "
        f"-> {args.out / 'catalog.json'}"
    )
    if not result.items:
        print(f"no items found under {args.root}; expected the layout {layout}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
