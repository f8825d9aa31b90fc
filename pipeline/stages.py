"""The pipeline's stages, each a function of the parameters.

The stages run discover -> fetch -> coregister -> shard -> validate. Each reads the previous stage's
output files and writes its own, so each is a DVC stage and a crashed run resumes where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from catalogs.atomic_files import atomic_open, write_json
from catalogs.store_format import FORMAT_VERSION
from pipeline.chips import ChipFile, ChipFileWriter, chunk_file
from pipeline.cluster import Executor
from pipeline.coregister import PARTNER_ITEMS, add_item_chips
from pipeline.discover import discover_to_table
from pipeline.failures import (
    Failure,
    ItemError,
    NothingUsableError,
    read_failures,
    write_failures,
)
from pipeline.fetch import fetch_rows
from pipeline.items import portable_href, read_table, table_rows_as_items, write_table
from pipeline.pairing import PARTNERS
from pipeline.params import PipelineParams
from pipeline.shard import plan_store, write_store

STAGES = ("discover", "fetch", "coregister", "shard", "validate")
NAME_CHARS_MAX = 96  # of a catalog id in a file name (the hash keeps truncated ids apart)
MAX_BATCH_FACTOR = 4  # a batch holds at most this many times pipeline.coregister.batch_items
LARGE_ITEM_PX = 2048 * 2048  # an item with a larger raster is co-registered alone
LARGE_ITEM_BYTES = 64 << 20  # and one with a larger file
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def failures_path(params: PipelineParams, stage: str) -> Path:
    """Where ``stage`` lists the inputs it quarantined."""
    return params.work_dir / "failures" / f"{stage}.json"


def chip_file(params: PipelineParams, batch: list[dict[str, Any]]) -> Path:
    """The chip file of a batch of work units (:func:`batches`).

    ``<collection>/<first item id>.<hash>.npz`` under ``params.chips_dir``, named after everything
    its chips depend on.

    The name carries a hash of each item's identity (collection and id) and assets (its
    partners' too), of the co-registration parameters and of the store format, so a resumed
    run reuses a file only when it would write the same one again, and a changed parameter,
    source file or batch gives a new file (the old one is then stale and removed). Collection
    and id come from the catalog: they appear only as safe file names (:func:`_file_name`);
    nothing reads them back from the name.
    """
    depends_on = {
        "items": [_identity(item) for item in batch],
        "coregister": asdict(params.coregister),
        "pictures": asdict(params.pictures),
        "store_format": FORMAT_VERSION,  # the chunks' encoding
    }
    digest = hashlib.sha256(json.dumps(depends_on, sort_keys=True, default=str).encode())
    first = batch[0]
    return (
        params.chips_dir
        / _file_name(first["collection"])
        / f"{_file_name(first['id'])}.{digest.hexdigest()[:16]}.npz"
    )


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    """What an item's chips depend on: collection, id, asset files and its partners'."""
    identity: dict[str, Any] = {
        "item": [item["collection"], item["id"]],
        "assets": _asset_files(item),
    }
    if item.get(PARTNER_ITEMS):
        identity["partners"] = {
            f"{p['collection']}/{p['id']}": _asset_files(p) for p in item[PARTNER_ITEMS]
        }
    return identity


@dataclass(frozen=True)
class PlannedUnit:
    """A work unit as the coregister stage plans it, without reading its item.

    Its row in the fetched table, its partners' rows (None for an item that is not a pair's
    reference), its collection and id, and whether it is large (:func:`_large_rows`).
    """

    row: int
    partner_rows: tuple[int, ...] | None
    collection: str
    id: str
    large: bool


def plan_units(table: pa.Table) -> list[PlannedUnit]:
    """The work units of the fetched table, in its order (:func:`work_units`'s units, as rows).

    They are read from a few of its columns, so the stage's main process never turns every item into
    a Python dict (a worker does, for its batch only).
    """
    collections = table.column("collection").to_pylist()
    ids = table.column("id").to_pylist()
    large = _large_rows(table)
    declared = (
        table.column(PARTNERS).to_pylist()
        if PARTNERS in table.column_names
        else [None] * table.num_rows
    )
    row_of = (
        {key: row for row, key in enumerate(zip(collections, ids, strict=True))}
        if any(declared)
        else {}
    )
    partners_of = [_partner_rows(partners, row_of) for partners in declared]
    partner_rows = {row for rows in partners_of if rows for row in rows}
    return [
        PlannedUnit(
            row,
            None if partners is None else tuple(partners),
            collections[row],
            ids[row],
            bool(large[row] or (partners and large[list(partners)].any())),
        )
        for row, partners in enumerate(partners_of)
        if partners is not None or row not in partner_rows
    ]


def _partner_rows(
    partners: dict[str, list[str] | None] | None, row_of: dict[tuple[str, str], int]
) -> list[int] | None:
    """The rows of the fetched partners an item declares (:data:`PARTNERS`).

    A collection without ids declares none. None when the item declares none: it is not a pair's
    reference.
    """
    declared = {c: ids for c, ids in (partners or {}).items() if ids is not None}
    if not declared:
        return None
    return [row_of[(c, i)] for c, ids in sorted(declared.items()) for i in ids if (c, i) in row_of]


def _large_rows(table: pa.Table) -> np.ndarray:
    """Per row, whether the item is a scene to co-register alone.

    It is when an asset declares more than ``LARGE_ITEM_PX`` pixels (``proj:shape``) or
    ``LARGE_ITEM_BYTES`` (``file:size``). An item declaring neither is taken for a small one.
    """
    large = np.zeros(table.num_rows, dtype=bool)
    if "assets" not in table.column_names or not table.num_rows:
        return large
    assets = table.column("assets").combine_chunks()
    for index in range(assets.type.num_fields):
        asset = pc.struct_field(assets, [index])
        fields = [field.name for field in asset.type]
        if "proj:shape" in fields:
            shape = pc.struct_field(asset, [fields.index("proj:shape")])
            sides = [
                pc.fill_null(pc.list_element(pc.fill_null(shape, [0, 0]), i), 0) for i in (0, 1)
            ]
            large |= pc.multiply(*sides).to_numpy(zero_copy_only=False) > LARGE_ITEM_PX
        if "file:size" in fields:
            size = pc.fill_null(pc.struct_field(asset, [fields.index("file:size")]), 0)
            large |= size.to_numpy(zero_copy_only=False) > LARGE_ITEM_BYTES
    return large


def batches(units: list[PlannedUnit], batch_items: int) -> list[list[PlannedUnit]]:
    """The work units cut into batches, one chip file and one task each.

    Units come sorted by (collection, id); a batch holds units of one collection. Its ends
    depend on the units themselves, not on their positions: a batch ends after a unit whose
    identity hashes to 0 modulo ``batch_items`` (so batches hold ``batch_items`` units on
    average, at most ``MAX_BATCH_FACTOR`` times that), and a large unit is a batch of its
    own. An item added to or removed from the catalog therefore changes one batch, and a
    rerun co-registers only that one.
    """
    result: list[list[PlannedUnit]] = []
    current: list[PlannedUnit] = []
    for unit in units:
        if current and (unit.collection != current[0].collection or unit.large):
            result.append(current)
            current = []
        current.append(unit)
        if (
            unit.large
            or len(current) >= MAX_BATCH_FACTOR * batch_items
            or _batch_end(unit, batch_items)
        ):
            result.append(current)
            current = []
    if current:
        result.append(current)
    return result


def _batch_end(unit: PlannedUnit, batch_items: int) -> bool:
    digest = hashlib.sha256(f"{unit.collection}/{unit.id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % batch_items == 0


def batch_task(table: pa.Table, batch: list[PlannedUnit]) -> tuple[pa.Table, list]:
    """What a worker needs to co-register ``batch``.

    Its rows of the table (each once) and, per unit, its row and its partners' rows (None if not a
    reference) in them.
    """
    rows = list(
        dict.fromkeys(row for unit in batch for row in (unit.row, *(unit.partner_rows or ())))
    )
    position = {row: i for i, row in enumerate(rows)}
    layout = [
        (
            position[unit.row],
            None if unit.partner_rows is None else [position[row] for row in unit.partner_rows],
        )
        for unit in batch
    ]
    return table.take(rows), layout


def batch_items_of(task: tuple[pa.Table, list]) -> list[dict[str, Any]]:
    """The work units (:func:`work_units`'s dicts) of a :func:`batch_task`."""
    table, layout = task
    items = table_rows_as_items(table)
    return [
        items[row]
        if partners is None
        else {**items[row], PARTNER_ITEMS: [items[p] for p in partners]}
        for row, partners in layout
    ]


def _file_name(catalog_id: str) -> str:
    """A catalog id as one path component that stays where it is put.

    Letters, digits, ``_``, ``-`` and ``.`` (no leading dot), every other run of characters as
    ``_``, at most ``NAME_CHARS_MAX`` characters, never empty.
    """
    return _NOT_NAME_CHARS.sub("_", catalog_id).lstrip(".")[:NAME_CHARS_MAX] or "_"


def _asset_files(item: dict[str, Any]) -> dict[str, list[Any]]:
    """Each asset's file as chip file names depend on it.

    Paths as the items table keeps them, so the name is the same wherever the project is.
    """
    return {
        key: [portable_href(asset["href"]), asset.get("file:checksum"), asset.get("file:size")]
        for key, asset in sorted(item["assets"].items())
    }


def run_discover(params: PipelineParams, executor: Executor, progress: bool = True) -> Path:
    """Find the items of the configured collections and write the items table.

    Item files are read on ``executor``.
    """
    return discover_to_table(params, executor)


def run_fetch(params: PipelineParams, executor: Executor, progress: bool = True) -> Path:
    """Make every asset local and verified; quarantine items whose assets fail.

    Local items are verified in chunks on ``executor``.
    """
    fetched, failures = fetch_rows(read_table(params.items_table), params, executor)
    write_failures(failures_path(params, "fetch"), failures)
    if not fetched.num_rows:
        raise NothingUsableError(f"no item could be fetched ({len(failures)} failures)")
    return write_table(params.fetched_table, fetched)


@dataclass(frozen=True)
class BatchResult:
    """What co-registering a batch gave: its chip file and the items that failed."""

    path: Path
    locations: int
    failures: list[Failure]


def coregister_batch(batch: list[dict[str, Any]], params: PipelineParams) -> BatchResult:
    """Co-register a batch of work units into its chip file, one durable write for the batch.

    The file is reused as it is when it already exists. An item that fails is recorded in the file
    and left out; the others go on.
    """
    path = chip_file(params, batch)
    if not path.exists():
        with ChipFileWriter(path) as writer:
            for item in batch:
                try:
                    add_item_chips(item, params, writer)
                except ItemError as error:
                    writer.add_failure(asdict(Failure.from_error("coregister", error)))
    written = ChipFile(path)
    return BatchResult(path, len(written.locations), [Failure(**row) for row in written.failures])


def _coregister_task(task: tuple[pa.Table, list], params: PipelineParams) -> BatchResult:
    """:func:`coregister_batch` of a :func:`batch_task`.

    Runs on a worker: the chips go to disk, only the path and the failures come back.
    """
    return coregister_batch(batch_items_of(task), params)


def run_coregister(params: PipelineParams, executor: Executor, progress: bool = True) -> Path:
    """Co-register and chip every fetched item, batch by batch in parallel.

    Drops and QA shifts are summarised.
    """
    table = pq.read_table(params.fetched_table)
    units = plan_units(table)
    tasks = (batch_task(table, batch) for batch in batches(units, params.coregister.batch_items))
    failures: list[Failure] = []
    done: list[Path] = []
    located = 0
    with tqdm(total=len(units), desc="coregister", unit="item", disable=not progress) as bar:
        for result in executor.map_unordered(_coregister_task, tasks, params):
            failures.extend(result.failures)
            done.append(result.path)
            located += result.locations
            bar.update(result.locations + len(result.failures))
    _remove_stale_chip_files(params, set(done))
    write_failures(failures_path(params, "coregister"), failures)
    if not located:
        raise NothingUsableError(f"no item could be co-registered ({len(failures)} failures)")
    summary = _summarise_chips(params, sorted(done))
    chips = json.loads(summary.read_text())["chips"]
    if not any(chips.values()):
        raise NothingUsableError(f"every chip was dropped: {summary}")
    return summary


def work_units(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items to co-register, in order.

    A pair's reference item carries its partner items (``PARTNER_ITEMS``, those fetched); partner
    items are not units of their own.
    """
    by_key = {(item["collection"], item["id"]): item for item in items}
    partners_of = {
        key: {
            collection: list(ids)
            for collection, ids in (item["properties"].get(PARTNERS) or {}).items()
            if ids is not None
        }
        for key, item in by_key.items()
    }
    partner_keys = {
        (c, i) for partners in partners_of.values() for c, ids in partners.items() for i in ids
    }
    units = []
    for key, item in by_key.items():
        if partners_of[key]:
            units.append(
                {
                    **item,
                    PARTNER_ITEMS: [
                        by_key[(c, i)]
                        for c, ids in sorted(partners_of[key].items())
                        for i in ids
                        if (c, i) in by_key
                    ],
                }
            )
        elif key not in partner_keys:
            units.append(item)
    return units


def _remove_stale_chip_files(params: PipelineParams, done: set[Path]) -> None:
    """Remove stale chip files, and any temporary file a killed writer left.

    Chip files of items no longer in the table (or left by an older run) would leak into the store.
    """
    keep = done | {chunk_file(path) for path in done}
    for path in params.chips_dir.rglob("*"):
        if path.is_file() and path not in keep:
            path.unlink()


def _summarise_chips(params: PipelineParams, paths: list[Path]) -> Path:
    """``qa.csv`` (one row per co-registered pair) and ``coregister.json`` (counts)."""
    dropped: Counter[str] = Counter()
    chips: Counter[str] = Counter()
    rows = []
    locations = 0
    for path in paths:
        chip_file = ChipFile(path)  # counts and QA rows; the pixels stay on disk
        for index, location in enumerate(chip_file.locations):
            locations += 1
            dropped.update(location["dropped"])
            for member, layout in enumerate(location["sensors"]):
                chips[layout["name"]] += chip_file.chip_count(chip_file.slot(index, member))
            rows.extend(
                {"source": location["source"], "item_id": location["item_id"], **shift}
                for shift in location["shifts"]
            )
    qa_path = params.work_dir / "qa.csv"
    columns = [
        "source",
        "item_id",
        "reference",
        "secondary",
        "dy_px",
        "dx_px",
        "shift_px",
        "flagged",
    ]
    with atomic_open(qa_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "locations": locations,
        "chips": dict(sorted(chips.items())),
        "dropped": dict(sorted(dropped.items())),
    }
    return write_json(params.work_dir / "coregister.json", summary)


def run_shard(params: PipelineParams, executor: Executor, progress: bool = True) -> Path:
    """Write every chip file into the sharded Zarr v3 store, shards in parallel."""
    paths = sorted(
        path for path in params.chips_dir.rglob("*.npz") if not path.name.startswith(".")
    )  # (a killed writer's temporary file)
    if not paths:
        raise NothingUsableError(f"no chip files in {params.chips_dir}: run coregister first")
    plan = plan_store(paths, chips_per_shard=params.shard.chips_per_shard)

    def map_fn(fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        # A generator: finalize_store merges each shard's statistics as it arrives.
        tasks = list(tasks)
        results = executor.map_unordered(fn, tasks)
        yield from tqdm(results, total=len(tasks), desc="shard", unit="shard", disable=not progress)

    return write_store(plan, params.store, map_fn=map_fn)


def all_failures(params: PipelineParams) -> list[Failure]:
    """Every input quarantined by any stage so far."""
    return [f for stage in STAGES for f in read_failures(failures_path(params, stage))]
