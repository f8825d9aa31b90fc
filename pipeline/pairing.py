"""Pairing across collections: each reference item with the partner items that cover it.

A public API publishes each sensor as its own collection (Sentinel-2 L2A, Sentinel-1 RTC, NAIP,
a DEM). For a pair declared in ``pipeline.coregister.pairs``, every reference item is matched,
per partner collection, with one *acquisition* of partner items: the items of one platform and
orbit (or one platform and day where no orbit is given), e.g. the slices of one Sentinel-1
datatake, which together may cover the reference tile. An acquisition qualifies when its
nearest item lies within ``max_days`` of the reference (the gap between their time spans: a
DEM dated by a start and end is 0 days from anything inside them), the union of its footprints
covers at least ``min_overlap`` of the reference footprint, and its items are readable by a
registry sensor and no cloudier than ``max_cloud_cover`` (where they say); the best is the
closest in time, then the largest overlap, then the first by (platform, orbit or day):
deterministic whatever the order the API answered in. Footprints are compared in
longitude/latitude: the overlap is a ratio of areas on a tile-sized patch, where the
distortion cancels to well under a percent.

A paired reference item gets ``msgfm:pair`` (the pair name) and ``msgfm:partners`` ({partner
collection: [item ids]}); partner items no reference uses are left out of the items table. The
pairs table (``pairs.csv`` beside it) has one row per reference item and partner collection:
the ids of both sides, the time difference and the overlap, or why the reference was left out.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import shapely.geometry
from pystac.utils import str_to_datetime
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from catalogs.atomic_files import atomic_open
from catalogs.item_assets import ItemReadError, match_sensor
from pipeline.params import PairSource

PAIR = "msgfm:pair"  # reference item property: the name of its pair
PARTNERS = "msgfm:partners"  # reference item property: {partner collection: [item ids]}
SECONDS_PER_DAY = 86400.0
PAIRS_COLUMNS = (
    "pair",
    "reference_collection",
    "reference_id",
    "partner_collection",
    "partner_ids",
    "time_difference_days",
    "overlap",
    "left_out",
)


@dataclass(frozen=True)
class PairRow:
    """One reference item and one partner collection: the match, or why there is none."""

    pair: str
    reference_collection: str
    reference_id: str
    partner_collection: str
    partner_ids: tuple[str, ...] = ()
    time_difference_days: float | None = None
    overlap: float | None = None
    left_out: str = ""

    def csv_row(self) -> dict[str, str]:
        """This match as a row of the pairs table (numbers with 6 decimals, None as empty)."""

        def number(value: float | None) -> str:
            return "" if value is None else f"{value:.6f}"

        return {
            "pair": self.pair,
            "reference_collection": self.reference_collection,
            "reference_id": self.reference_id,
            "partner_collection": self.partner_collection,
            "partner_ids": " ".join(self.partner_ids),
            "time_difference_days": number(self.time_difference_days),
            "overlap": number(self.overlap),
            "left_out": self.left_out,
        }


@dataclass(frozen=True)
class _Footprint:
    """What matching needs of an item.

    Id, time span (an instant: start == end), footprint, acquisition key, cloud cover and whether a
    registry sensor reads it.
    """

    item_id: str
    start: datetime | None
    end: datetime | None
    geometry: BaseGeometry | None
    acquisition: tuple[str, str]
    cloud_cover: float | None = None
    readable: bool = True

    def days_from(self, other: _Footprint) -> float:
        """Days between the two time spans (0 where they overlap)."""
        assert self.start and self.end and other.start and other.end
        gap = max(
            (other.start - self.end).total_seconds(), (self.start - other.end).total_seconds(), 0.0
        )
        return gap / SECONDS_PER_DAY


def pair_items(
    items: list[dict[str, Any]], pairs: dict[str, PairSource]
) -> tuple[list[dict[str, Any]], list[PairRow]]:
    """Match the reference items of every pair with their partners.

    Args:
        items: discovered STAC item dicts (every collection).
        pairs: the pair declarations by name.

    Returns:
        The items to fetch, in input order: items of no pair's collection as they are, paired
        references annotated (:data:`PAIR`, :data:`PARTNERS`), the partner items they use;
        and the pairs table rows, by pair, reference id, partner collection.
    """
    if not pairs:
        return items, []
    by_collection: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_collection.setdefault(item["collection"], []).append(item)
    paired_collections = {c for p in pairs.values() for c in (p.reference, *p.partners)}
    annotations: dict[tuple[str, str], dict[str, Any]] = {}
    used: set[tuple[str, str]] = set()
    rows: list[PairRow] = []
    for name, pair in sorted(pairs.items()):
        partners = {c: [_footprint(i) for i in by_collection.get(c, [])] for c in pair.partners}
        for reference in sorted(by_collection.get(pair.reference, []), key=lambda i: i["id"]):
            matched = _match(name, pair, reference, partners)
            rows.extend(matched)
            if all(not row.left_out for row in matched):
                annotations[(pair.reference, reference["id"])] = {
                    PAIR: name,
                    PARTNERS: {r.partner_collection: list(r.partner_ids) for r in matched},
                }
                used.update((r.partner_collection, i) for r in matched for i in r.partner_ids)
    kept = []
    for item in items:
        key = (item["collection"], item["id"])
        if key in annotations:
            kept.append({**item, "properties": {**item["properties"], **annotations[key]}})
        elif item["collection"] not in paired_collections or key in used:
            kept.append(item)
    return kept, rows


def _match(
    name: str, pair: PairSource, reference: dict[str, Any], partners: dict[str, list[_Footprint]]
) -> list[PairRow]:
    """The rows of one reference item: one per partner collection."""
    base = {"pair": name, "reference_collection": pair.reference, "reference_id": reference["id"]}
    cloud = (reference.get("properties") or {}).get("eo:cloud_cover")
    footprint = _footprint(reference)
    reason = ""
    if pair.max_cloud_cover is not None and cloud is not None and cloud > pair.max_cloud_cover:
        reason = f"cloud cover {cloud}% above max_cloud_cover {pair.max_cloud_cover}%"
    elif footprint.geometry is None or footprint.geometry.area == 0:
        reason = "no footprint"
    elif footprint.start is None:
        reason = "no datetime"
    if reason:
        return [PairRow(**base, partner_collection=c, left_out=reason) for c in pair.partners]
    rows = []
    for collection, candidates in partners.items():
        best = _best_acquisition(footprint, candidates, pair)
        if best is None:
            rows.append(
                PairRow(
                    **base,
                    partner_collection=collection,
                    left_out=(
                        f"no {collection} acquisition within {pair.max_days:g} days covering "
                        f"{pair.min_overlap:.0%} of the footprint"
                    ),
                )
            )
        else:
            ids, days, overlap = best
            rows.append(
                PairRow(
                    **base,
                    partner_collection=collection,
                    partner_ids=ids,
                    time_difference_days=days,
                    overlap=overlap,
                )
            )
    return rows


def _best_acquisition(
    reference: _Footprint, candidates: Iterable[_Footprint], pair: PairSource
) -> tuple[tuple[str, ...], float, float] | None:
    """(item ids, days apart, overlap) of the best qualifying acquisition, or None."""
    assert reference.geometry is not None
    groups: dict[tuple[str, str], list[tuple[_Footprint, float]]] = {}
    for candidate in candidates:
        if (
            candidate.geometry is None
            or candidate.start is None
            or not candidate.readable
            or (
                pair.max_cloud_cover is not None
                and candidate.cloud_cover is not None
                and candidate.cloud_cover > pair.max_cloud_cover
            )
        ):
            continue
        days = candidate.days_from(reference)
        if days <= pair.max_days and candidate.geometry.intersects(reference.geometry):
            groups.setdefault(candidate.acquisition, []).append((candidate, days))
    ranked = []
    for acquisition, members in groups.items():
        union = unary_union([m.geometry for m, _ in members])
        overlap = union.intersection(reference.geometry).area / reference.geometry.area
        if overlap >= pair.min_overlap:
            days = min(d for _, d in members)
            ids = tuple(sorted(m.item_id for m, _ in members))
            ranked.append(((days, -overlap, acquisition), (ids, days, overlap)))
    return min(ranked)[1] if ranked else None


def _footprint(item: dict[str, Any]) -> _Footprint:
    properties = item.get("properties") or {}
    start = _time(properties.get("start_datetime") or properties.get("datetime"))
    end = _time(properties.get("end_datetime") or properties.get("datetime")) or start
    geometry = shapely.geometry.shape(item["geometry"]) if item.get("geometry") else None
    orbit = properties.get("sat:absolute_orbit")
    day = start.date().isoformat() if start else ""
    acquisition = (
        str(properties.get("platform", "")).lower(),
        f"orbit {orbit}" if orbit is not None else day,
    )
    try:
        match_sensor(item)
        readable = True
    except ItemReadError:  # e.g. Landsat 7 in landsat-c2-l2: fetch would refuse it
        readable = False
    return _Footprint(
        item["id"], start, end, geometry, acquisition, properties.get("eo:cloud_cover"), readable
    )


def _time(value: str | datetime | None) -> datetime | None:
    return str_to_datetime(value) if isinstance(value, str) else value


def write_pairs_table(path: Path, rows: list[PairRow]) -> Path:
    """The pairs table as CSV, written to a temporary name and renamed."""
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAIRS_COLUMNS)
        writer.writeheader()
        writer.writerows(row.csv_row() for row in rows)
    return path
