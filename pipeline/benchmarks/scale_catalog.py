"""The scale bench's input: a static STAC catalog of N small items in GeoPile-2's proportions.

GeoPile-2 is about 1.0 M Million-AID pictures, 0.6 M GeoPile pictures and 0.18 M SEN12MS patch
triplets (the figures of issue 15; MDAS's few large scenes are left out: they are not small
items). The N items keep those proportions (:data:`PROPORTIONS`, largest remainders).

Picture sizes are an assumption, not a measurement: Million-AID's pictures range widely, many
around 500-1000 px; GeoPile's sources are mostly 256-600 px. :data:`PICTURE_SIZES` gives the mix
used (square JPEGs, quality 90), drawn per item from the seed.

A *pool* of distinct files is rendered from the sample world once per seed: SEN12MS patch
triplets by :func:`catalogs.sample.pretraining.write_sen12ms` (S2 L2A on UTM 32N, S1 on a
rotated UTM 33N grid, MODIS land cover: 256 px at 10 m), and pictures of each size (ground
rendered at 256 px, upscaled bilinearly, then the sample world's 8-bit camera with its per-pixel
noise, set so that a JPEG holds about as many bytes as a photo's). The real catalog builders
catalogue the pool, so its item JSONs are exactly what they write. The N items are then
copies: each item's files are copied from a pool item under the item's own names (one file per
asset per item, as the datasets ship them) and its JSON is the pool item's with the id, hrefs
and the properties the names give changed, written with :mod:`json` (pystac's per-item save
is too slow for 20,000 items). Both are cached under ``<bench dir>/scale/``, keyed by seed
(pool) and by N and seed (items), each written into a staging folder that replaces its target
whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catalogs.atomic_files import atomic_folder
from catalogs.build import build_catalog
from catalogs.sample import render
from catalogs.sample.camera import to_display_8bit
from catalogs.sample.files import write_picture
from catalogs.sample.pretraining import MILLIONAID_CATEGORIES, PICTURE_GSDS_M, write_sen12ms
from catalogs.sample.sites import random_centers, world_grid
from catalogs.sample.world import World
from catalogs.sensors import get_sensor

FORMAT = 1  # bump when the files a key names change
# Items of each collection in GeoPile-2 (issue 15): Million-AID, GeoPile, SEN12MS.
PROPORTIONS = {"millionaid": 1_000_000, "geopile": 600_000, "sen12ms": 180_000}
# Picture side (px) -> share of the collection's pictures (an assumption; see the docstring).
PICTURE_SIZES = {
    "millionaid": {256: 0.1, 512: 0.3, 768: 0.3, 1024: 0.3},
    "geopile": {256: 0.6, 512: 0.3, 600: 0.1},
}
MILLIONAID_POOL_PER_SIZE = 4  # the first in train/ (labelled), the others in test/
GEOPILE_POOL_CONSTITUENTS = ("RSD46-WHU", "MLRSNet", "RESISC45", "PatternNet")  # one per size
RENDER_PX = 256  # pool pictures are rendered at this side, then upscaled
# The camera's noise (8-bit DN) of the upscaled pictures: texture as dense as a photo's, about
# 1.4 bits per pixel at JPEG quality 90 (with the camera's default 1 DN, 0.3: JPEG decoding,
# whose cost follows the entropy-coded bytes, would be unrealistically cheap).
PICTURE_NOISE_DN = 5.0
RAW_PREFIX = "../../raw/"  # an item JSON's asset hrefs start so (<collection>/<id>/<id>.json)


def geopile2_counts(items: int) -> dict[str, int]:
    """Items per collection for ``items`` in all, in :data:`PROPORTIONS`.

    Rounded by largest remainders, ties to the larger collection.
    """
    total = sum(PROPORTIONS.values())
    exact = {name: items * share / total for name, share in PROPORTIONS.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (counts[name] - exact[name], -PROPORTIONS[name]))
    for name in by_remainder[: items - sum(counts.values())]:
        counts[name] += 1
    return counts


def picture_mix() -> str:
    """:data:`PICTURE_SIZES` in words."""
    return "\n".join(
        f"  {source} " + ", ".join(f"{side} ({share:.0%})" for side, share in sizes.items())
        for source, sizes in PICTURE_SIZES.items()
    )


def pool_dir(bench_dir: Path, seed: int) -> Path:
    """The folder of the pool of ``seed`` under ``bench_dir/scale``."""
    return bench_dir.resolve() / "scale" / f"pool-seed{seed}-v{FORMAT}"


def items_dir(bench_dir: Path, items: int, seed: int) -> Path:
    """The folder of the ``items`` items of ``seed`` under ``bench_dir/scale``."""
    return bench_dir.resolve() / "scale" / f"items{items}-seed{seed}-v{FORMAT}"


def ensure_pool(bench_dir: Path, seed: int) -> Path:
    """The pool's folder (its ``catalog.json`` and ``raw/``), rendered unless cached."""
    target = pool_dir(bench_dir, seed)
    if (target / "catalog.json").is_file():
        return target
    with atomic_folder(target, durable=False) as staging:
        world = World(seed)
        raw = staging / "raw"
        write_sen12ms(world, raw / "sen12ms")
        _write_pictures(world, raw, np.random.default_rng([seed, 15]))
        results = build_catalog(
            {source: raw / source for source in PROPORTIONS}, staging, sample=True
        )
        problems = [f"{p.path}: {p.reason}" for r in results.values() for p in r.problems]
        if problems:
            raise RuntimeError("the catalog builders rejected pool files:\n" + "\n".join(problems))
    return target


def _write_pictures(world: World, raw: Path, rng: np.random.Generator) -> None:
    """Million-AID pictures and GeoPile pictures of every size of :data:`PICTURE_SIZES`.

    Million-AID's under train/<L1>/<L2>[/<L3>]/ or test/, GeoPile's under
    <constituent>/<class>/; labels round-robin (they do not matter to the build).
    """
    categories = list(MILLIONAID_CATEGORIES.values())
    for size in PICTURE_SIZES["millionaid"]:
        for number in range(MILLIONAID_POOL_PER_SIZE):
            name = f"P{size:04d}{number:03d}.jpg"
            folder = (
                Path("train", *categories[(size + number) % len(categories)])
                if number == 0
                else Path("test")
            )
            write_picture(raw / "millionaid" / folder / name, _picture(world, size, rng))
    for size in PICTURE_SIZES["geopile"]:
        for number, constituent in enumerate(GEOPILE_POOL_CONSTITUENTS):
            label = categories[(size + number) % len(categories)][-1]
            name = f"{constituent.lower().replace('-', '_')}_{size:04d}.jpg"
            write_picture(raw / "geopile" / constituent / label / name, _picture(world, size, rng))


def _picture(world: World, size: int, rng: np.random.Generator) -> np.ndarray:
    """(3, size, size) uint8: random ground at a random GSD, upscaled from :data:`RENDER_PX`."""
    (center,) = random_centers(1, rng)
    grid = world_grid(center, (RENDER_PX, RENDER_PX), float(rng.choice(PICTURE_GSDS_M)))
    reflectance = render.surface_reflectance(world, grid, get_sensor("rgb"), supersample=1)
    upscaled = np.stack(
        [
            np.asarray(
                Image.fromarray(band.astype(np.float32), "F").resize(
                    (size, size), Image.Resampling.BILINEAR
                )
            )
            for band in reflectance
        ]
    )
    return to_display_8bit(upscaled, rng, noise=PICTURE_NOISE_DN)


def pool_items(pool: Path) -> dict[str, list[dict[str, Any]]]:
    """The pool's item JSONs by collection, in the order of the collections' item links."""
    return {
        source: list(_collection_items(pool / source / "collection.json")) for source in PROPORTIONS
    }


def _collection_items(collection_path: Path) -> Iterator[dict[str, Any]]:
    collection = json.loads(collection_path.read_text())
    for link in collection["links"]:
        if link["rel"] == "item":
            yield json.loads((collection_path.parent / link["href"]).read_text())


def catalog_items(catalog: Path) -> Iterator[dict[str, Any]]:
    """Every item JSON of a rendered catalog (``catalog.json``), collection by collection."""
    root = json.loads(catalog.read_text())
    for link in root["links"]:
        if link["rel"] == "child":
            yield from _collection_items(catalog.parent / link["href"])


def asset_paths(catalog: Path, item: dict[str, Any]) -> dict[str, Path]:
    """Asset key -> file of an item of the rendered catalog ``catalog``."""
    folder = catalog.parent / item["collection"] / item["id"]
    return {
        key: Path(os.path.normpath(folder / asset["href"])) for key, asset in item["assets"].items()
    }


def ensure_items(bench_dir: Path, items: int, seed: int) -> Path:
    """The rendered catalog of ``items`` items (its ``catalog.json``), rendered unless cached."""
    target = items_dir(bench_dir, items, seed)
    if (target / "catalog.json").is_file():
        return target / "catalog.json"
    pool = ensure_pool(bench_dir, seed)
    templates = pool_items(pool)
    with atomic_folder(target, durable=False) as staging:
        for index, (source, count) in enumerate(geopile2_counts(items).items()):
            rng = np.random.default_rng([seed, 15, index])
            links = [
                _write_item(pool, staging, source, template, number)
                for number, template in enumerate(_templates(source, templates[source], count, rng))
            ]
            collection = json.loads((pool / source / "collection.json").read_text())
            collection["links"] = [
                link for link in collection["links"] if link["rel"] != "item"
            ] + links
            (staging / source / "collection.json").write_text(json.dumps(collection, indent=2))
        root = json.loads((pool / "catalog.json").read_text())
        root["links"] = [
            link
            for link in root["links"]
            if link["rel"] != "child" or link["href"].split("/")[1] in PROPORTIONS
        ]
        (staging / "catalog.json").write_text(json.dumps(root, indent=2))
    return target / "catalog.json"


def _templates(
    source: str, pool: list[dict[str, Any]], count: int, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    """The pool item each of ``count`` items copies.

    Pictures of a size drawn from :data:`PICTURE_SIZES`, round-robin among the pool's pictures
    of that size; patches round-robin.
    """
    if source not in PICTURE_SIZES:
        for number in range(count):
            yield pool[number % len(pool)]
        return
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in pool:
        by_size[max(item["assets"]["image"]["proj:shape"])].append(item)
    mix = PICTURE_SIZES[source]
    used: dict[int, int] = defaultdict(int)
    for size in rng.choice(list(mix), size=count, p=list(mix.values())):
        group = by_size[int(size)]
        yield group[used[int(size)] % len(group)]
        used[int(size)] += 1


def _write_item(
    pool: Path, out: Path, source: str, template: dict[str, Any], number: int
) -> dict[str, str]:
    """Copy ``template``'s files under item ``number``'s names and write its JSON.

    Returns the collection's link to it. Names follow the builders' rules: a picture's file
    stem gets ``_<number>`` (its id, which ends with the stem, too); a SEN12MS patch becomes
    patch ``<number>`` of the template's scene (``..._p<number>``).
    """
    item = json.loads(json.dumps(template))
    if source == "sen12ms":
        patch = f"_p{template['properties']['sen12ms:patch']}"
        item["id"] = template["id"].removesuffix(patch) + f"_p{number}"
        item["properties"]["sen12ms:patch"] = number
    else:
        item["id"] = f"{template['id']}_{number:07d}"
    for asset in item["assets"].values():
        relative = Path(asset["href"].removeprefix(RAW_PREFIX))
        stem = (
            relative.stem.removesuffix(patch) + f"_p{number}"
            if source == "sen12ms"
            else f"{relative.stem}_{number:07d}"
        )
        renamed = relative.with_name(stem + relative.suffix)
        target = out / "raw" / renamed
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pool / "raw" / relative, target)
        asset["href"] = RAW_PREFIX + renamed.as_posix()
    folder = out / source / item["id"]
    folder.mkdir(parents=True)
    (folder / f"{item['id']}.json").write_text(json.dumps(item))
    return {
        "rel": "item",
        "href": f"./{item['id']}/{item['id']}.json",
        "type": "application/geo+json",
    }
