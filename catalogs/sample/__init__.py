"""The embedded sample world: one procedural world seen by every sensor.

It is written as each source dataset's official layout plus a static STAC catalog.
``python -m catalogs.sample --help``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tqdm import tqdm

from catalogs.atomic_files import atomic_folder
from catalogs.sample.downstream import (
    write_bigearthnet,
    write_sen12ms_cr,
    write_spacenet2,
    write_vaihingen,
)
from catalogs.sample.pretraining import (
    SMALL,
    PretrainingSizes,
    write_geopile,
    write_mdas,
    write_millionaid,
    write_sen12ms,
)
from catalogs.sample.world import World

# Collection id -> writer of that source's official layout. Sources live in ``<out>/raw/<id>``.
WRITERS: dict[str, Callable[[World, Path], None]] = {
    "sen12ms": write_sen12ms,
    "mdas": write_mdas,
    "millionaid": write_millionaid,
    "geopile": write_geopile,
    "bigearthnet": write_bigearthnet,
    "sen12ms-cr": write_sen12ms_cr,
    "spacenet2": write_spacenet2,
    "vaihingen": write_vaihingen,
}


class SampleBuildError(RuntimeError):
    """The sample world could not be catalogued (a builder rejected a file the world wrote)."""


def build_sample(
    out: Path | str, seed: int = 0, pretraining: PretrainingSizes = SMALL, progress: bool = False
) -> Path:
    """Render the sample world with ``seed`` into ``out`` and catalogue it.

    ``pretraining`` sets how many SEN12MS scenes and MDAS sub-areas are rendered (the tests use
    :data:`~catalogs.sample.pretraining.SMALL`, ``dvc repro`` the larger ``CORPUS``).

    Returns the root ``catalog.json``. The same seed gives byte-identical files.

    The world is built in a temporary sibling folder and moved into place at the end, so
    ``out`` never holds a half-written world; an existing ``out`` is replaced.
    """
    from catalogs.build import build_catalog

    out = Path(out).resolve()
    world = World(seed)
    with atomic_folder(out) as staging:
        writers = {
            **WRITERS,
            "sen12ms": partial(write_sen12ms, sizes=pretraining),
            "mdas": partial(write_mdas, sizes=pretraining),
        }
        sources = tqdm(writers.items(), desc="rendering", unit="source", disable=not progress)
        for source, writer in sources:
            sources.set_postfix_str(source)
            writer(world, staging / "raw" / source)
        results = build_catalog({s: staging / "raw" / s for s in WRITERS}, staging, sample=True)
        problems = [f"{p.path}: {p.reason}" for r in results.values() for p in r.problems]
        if problems:
            raise SampleBuildError(
                "the catalog builders rejected sample files:\n" + "\n".join(problems)
            )
    return out / "catalog.json"


def rendered_summary(folder: Path, start: float) -> str:
    """What a rendering command prints of ``folder``: files, megabytes, seconds since ``start``.

    Args:
        folder: the folder written.
        start: ``time.perf_counter()`` when rendering began.

    Returns:
        ``"<N> files, <X> MB, <T> s"``.
    """
    files = [path for path in folder.rglob("*") if path.is_file()]
    size_mb = sum(path.stat().st_size for path in files) / 1e6
    return f"{len(files)} files, {size_mb:.1f} MB, {time.perf_counter() - start:.1f} s"
