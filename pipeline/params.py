"""The pipeline's parameters (the ``pipeline`` section of ``params.yaml``) as typed objects."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

PARAMS_PATH = Path("params.yaml")


@dataclass(frozen=True)
class FetchParams:
    """How assets are fetched (:mod:`pipeline.fetch`).

    ``sign``: None, or ``"planetary_computer"`` to sign Azure Blob Storage hrefs with a SAS
    token of ``sign_endpoint`` just before each request. ``store_options``: per remote scheme
    (``http``, ``https``, ``s3``, ``gs``), keyword arguments of obstore's store for it (its
    config keys and ``client_options``), e.g. ``{"s3": {"request_payer": True}}``.
    ``allow_private_hosts``: http(s) requests (assets, a remote catalog's links) may go to
    loopback, private and link-local addresses. ``allow_local_files_from_remote``: a catalog
    read over the network may name local files. ``allowed_local_folders``: folders besides its
    own root whose files a local catalog may name. All off by default
    (:mod:`pipeline.access_policy`).
    """

    cache_dir: Path = Path("data/cache")
    allowed_schemes: tuple[str, ...] = ("file", "http", "https", "s3", "gs")
    retries: int = 4
    concurrency: int = 8
    sign: str | None = None
    sign_endpoint: str = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
    store_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    allow_private_hosts: bool = False
    allow_local_files_from_remote: bool = False
    allowed_local_folders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        signers = ("planetary_computer",)
        if self.sign is not None and self.sign not in signers:
            raise ValueError(f"pipeline.fetch.sign: unknown signer {self.sign!r} "
                             f"(allowed: null, {', '.join(signers)})")


@dataclass(frozen=True)
class SourceGrid:
    """How one paired source is cut: its reference asset, chip size and stride (pixels)."""

    reference: str
    chip_px: int = 256
    stride_px: int = 256


@dataclass(frozen=True)
class PairSource:
    """Items of different collections paired by footprint and time (``pipeline/pairing.py``):
    each ``reference`` item (its native grid is the grid) with the partner items, per partner
    collection, closest in time within ``max_days`` that cover at least ``min_overlap`` of its
    footprint; references above ``max_cloud_cover`` (``eo:cloud_cover``, %) are left out."""

    reference: str
    partners: tuple[str, ...]
    max_days: float = 3.0
    min_overlap: float = 0.5
    max_cloud_cover: float | None = None
    chip_px: int = 256
    stride_px: int = 256


@dataclass(frozen=True)
class CoregisterParams:
    sources: dict[str, SourceGrid] = field(default_factory=dict)
    pairs: dict[str, PairSource] = field(default_factory=dict)
    max_nodata_share: float = 0.05
    shift_flag_px: float = 0.5
    qa_window_px: int = 512
    block_px: int = 2048  # reference-grid pixels per block side (0: the whole grid at once)


@dataclass(frozen=True)
class PictureParams:
    chip_px: int = 256


@dataclass(frozen=True)
class ShardParams:
    chips_per_shard: int = 256


@dataclass(frozen=True)
class PipelineParams:
    catalog: str | None = "data/sample/catalog.json"
    api_url: str | None = None
    collections: tuple[str, ...] = ("sen12ms", "mdas", "millionaid", "geopile")
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None
    work_dir: Path = Path("data/work")
    store: Path = Path("data/geopile2.zarr")
    reports_dir: Path = Path("reports")
    workers: int = 2
    fetch: FetchParams = field(default_factory=FetchParams)
    coregister: CoregisterParams = field(default_factory=CoregisterParams)
    pictures: PictureParams = field(default_factory=PictureParams)
    shard: ShardParams = field(default_factory=ShardParams)

    @property
    def items_table(self) -> Path:
        """Output of discover: every item found, as stac-geoparquet."""
        return self.work_dir / "items.parquet"

    @property
    def pairs_table(self) -> Path:
        """Output of discover: the matches of the pairs across collections (pairing.py)."""
        return self.work_dir / "pairs.csv"

    @property
    def fetched_table(self) -> Path:
        """Output of fetch: the items with asset hrefs pointing at verified local files."""
        return self.work_dir / "fetched.parquet"

    @property
    def chips_dir(self) -> Path:
        """Output of coregister: one ``<source>/<item id>.npz`` (+ ``.chunks``) of LocationChips
        per item."""
        return self.work_dir / "chips"


def _checked(cls: type, raw: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """``raw`` as keyword arguments of ``cls``, rejecting keys ``cls`` does not have."""
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    return raw


def _pair(raw: dict[str, Any] | None, where: str, collections: tuple[str, ...]) -> PairSource:
    """A pair declaration, its collections among the discovered ones."""
    fields_ = _checked(PairSource, raw, where)
    fields_["partners"] = tuple(fields_.get("partners") or ())
    try:
        pair = PairSource(**fields_)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from error
    if not pair.partners:
        raise ValueError(f"{where}: no partners")
    missing = [c for c in (pair.reference, *pair.partners) if c not in collections]
    if missing:
        raise ValueError(f"{where}: collections {missing} are not in pipeline.collections "
                         f"{list(collections)}")
    if not 0.0 < pair.min_overlap <= 1.0 or pair.max_days < 0:
        raise ValueError(f"{where}: min_overlap must be in (0, 1] and max_days >= 0")
    return pair


def load_params(path: Path | str = PARAMS_PATH,
                overrides: dict[str, Any] | None = None) -> PipelineParams:
    """Read the ``pipeline`` section of ``path``; ``overrides`` replace its top-level keys.

    Raises:
        ValueError: naming the file and the key, for a misspelt parameter.
    """
    with open(path) as f:
        section = (yaml.safe_load(f) or {}).get("pipeline", {})
    raw = _checked(PipelineParams, {**section, **(overrides or {})}, f"{path}: pipeline")
    fetch = _checked(FetchParams, raw.pop("fetch", None), f"{path}: pipeline.fetch")
    coregister = _checked(CoregisterParams, raw.pop("coregister", None),
                          f"{path}: pipeline.coregister")
    sources = {
        name: SourceGrid(**_checked(SourceGrid, grid, f"{path}: pipeline.coregister.{name}"))
        for name, grid in coregister.pop("sources", {}).items()}
    pairs = {name: _pair(pair, f"{path}: pipeline.coregister.pairs.{name}",
                         raw.get("collections", PipelineParams.collections))
             for name, pair in (coregister.pop("pairs", None) or {}).items()}
    pictures = _checked(PictureParams, raw.pop("pictures", None), f"{path}: pipeline.pictures")
    shard = _checked(ShardParams, raw.pop("shard", None), f"{path}: pipeline.shard")
    if "cache_dir" in fetch:
        fetch["cache_dir"] = Path(fetch["cache_dir"])
    if "allowed_schemes" in fetch:
        fetch["allowed_schemes"] = tuple(fetch["allowed_schemes"])
    if "store_options" in fetch:
        fetch["store_options"] = dict(fetch["store_options"] or {})
    for key in ("work_dir", "store", "reports_dir"):
        if key in raw:
            raw[key] = Path(raw[key])
    for key in ("collections", "bbox"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    return PipelineParams(**raw, fetch=FetchParams(**fetch),
                          coregister=CoregisterParams(sources=sources, pairs=pairs,
                                                      **coregister),
                          pictures=PictureParams(**pictures), shard=ShardParams(**shard))
