"""The pipeline's parameters (the ``pipeline`` section of ``params.yaml``) as typed objects.

:func:`load_params` checks every parameter as it reads the file (type and allowed range, see
``_RULES``) and raises a :class:`ParamsError` naming the file, the full key and what is allowed:
a misspelt section or key, a string where a number belongs, a chip of 0 px or a negative number
of retries never reaches a stage. A chip stride may exceed the chip (chips then leave gaps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pystac.utils import str_to_datetime
from pystac_client.item_search import ItemSearch

PARAMS_PATH = Path("params.yaml")
SECTIONS = ("pipeline", "sample")  # the top-level sections of params.yaml; pipeline is required
SIGNERS = ("planetary_computer",)
MAX_CHIP_PX = 4096  # one chip is one chunk of the store: 4096 px is 32 MiB per 16-bit band
MIN_BLOCK_PX = 256  # smaller blocks re-read more kernel margin than they save in memory


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
    (:mod:`catalogs.access_policy`).
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

    def option_name(self, option: str) -> str:
        """How a user sets an option of the access policy (catalogs/access_policy.py)."""
        return f"pipeline.fetch.{option}"

    def __post_init__(self) -> None:
        """Refuse an unknown signer."""
        if self.sign is not None and self.sign not in SIGNERS:
            raise ValueError(
                f"pipeline.fetch.sign: unknown signer {self.sign!r} "
                f"(allowed: null, {', '.join(SIGNERS)})"
            )


@dataclass(frozen=True)
class SourceGrid:
    """How one paired source is cut: its reference asset, chip size and stride (pixels)."""

    reference: str
    chip_px: int = 256
    stride_px: int = 256


@dataclass(frozen=True)
class PairSource:
    """Items of different collections paired by footprint and time (``pipeline/pairing.py``).

    Each ``reference`` item (its native grid is the grid) with the partner items, per partner
    collection, closest in time within ``max_days`` that cover at least ``min_overlap`` of its
    footprint; references above ``max_cloud_cover`` (``eo:cloud_cover``, %) are left out.
    """

    reference: str
    partners: tuple[str, ...]
    max_days: float = 3.0
    min_overlap: float = 0.5
    max_cloud_cover: float | None = None
    chip_px: int = 256
    stride_px: int = 256


@dataclass(frozen=True)
class CoregisterParams:
    """Parameters of the coregister stage: source grids, pairs, QA, block and batch sizes."""

    sources: dict[str, SourceGrid] = field(default_factory=dict)
    pairs: dict[str, PairSource] = field(default_factory=dict)
    max_nodata_share: float = 0.05
    shift_flag_px: float = 0.5
    qa_window_px: int = 512
    block_px: int = 2048  # reference-grid pixels per block side (0: the whole grid at once)
    # The most pixels (width x height) a raster or picture may declare: larger files are
    # quarantined from their header, before any read. 4 Sentinel-2 tiles (10980 px a side).
    max_raster_px: int = 500_000_000
    # Work units per batch on average: one chip file and one task per batch (a scene larger
    # than a block is a batch of its own).
    batch_items: int = 256


@dataclass(frozen=True)
class PictureParams:
    """Parameters of pictures (items of a collection without a source grid): chip size (px)."""

    chip_px: int = 256


@dataclass(frozen=True)
class ShardParams:
    """Parameters of the shard stage: the chips per shard file."""

    chips_per_shard: int = 256


@dataclass(frozen=True)
class PipelineParams:
    """The ``pipeline`` section of a params file: the sources, the folders and each stage's."""

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
        """Output of coregister: one chip file of LocationChips per item.

        The file is ``<source>/<item id>.<hash>.npz`` (+ ``.chunks``), source and id made safe file
        names (pipeline.stages).
        """
        return self.work_dir / "chips"


class ParamsError(ValueError):
    """A parameter file that cannot be used: names the file, the full key and the reason."""

    def __init__(self, path: Path | str, key: str | None, reason: str) -> None:
        """Initialize a new ParamsError instance.

        Args:
            path: the parameter file.
            key: the full key of the parameter; None for the file as a whole.
            reason: why the parameter cannot be used.
        """
        super().__init__(f"{path}: {key}: {reason}" if key else f"{path}: {reason}")


Rule = Callable[[Any], Any]  # a parameter's value as its field holds it; ValueError: why not
T = TypeVar("T")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(low: int, high: int | None = None) -> Rule:
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"

    def check(value: Any) -> int:
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and low <= value
            and (high is None or value <= high)
        ):
            raise ValueError(f"must be an integer {allowed}, got {value!r}")
        return value

    return check


def _number(low: float, high: float = math.inf, low_open: bool = False) -> Rule:
    """A finite number from ``low`` (excluded if ``low_open``) to ``high``."""
    allowed = (
        f"{'>' if low_open else '>='} {low}"
        if high == math.inf
        else f"in {'(' if low_open else '['}{low}, {high}]"
    )

    def check(value: Any) -> float:
        if not (
            _is_number(value)
            and math.isfinite(value)
            and value <= high
            and (low < value if low_open else low <= value)
        ):
            raise ValueError(f"must be a number {allowed}, got {value!r}")
        return value

    return check


def _optional(rule: Rule) -> Rule:
    """None (YAML ``null``), or what ``rule`` allows."""

    def check(value: Any) -> Any:
        return None if value is None else rule(value)

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _folders(value: Any) -> tuple[str, ...]:
    """A list (maybe empty) of folder paths."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"must be a list of folder paths, got {value!r}")
    return tuple(value)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"must be a path (a non-empty string), got {value!r}")
    return Path(value)


def _choice(allowed: tuple[str, ...]) -> Rule:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {list(allowed)}, got {value!r}")
        return value

    return check


def _names(allowed: tuple[str, ...] | None = None) -> Rule:
    """A non-empty list of distinct non-empty strings (each in ``allowed``, if given)."""

    def check(value: Any) -> tuple[str, ...]:
        if (
            not isinstance(value, list | tuple)
            or not value
            or len(set(value)) != len(value)
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise ValueError(f"must be a non-empty list of distinct names, got {value!r}")
        if allowed is not None:
            for name in value:
                _choice(allowed)(name)
        return tuple(value)

    return check


def _block_px(value: Any) -> int:
    if not (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value == 0 or value >= MIN_BLOCK_PX)
    ):
        raise ValueError(
            f"must be 0 (the whole grid at once) or an integer >= {MIN_BLOCK_PX}, got {value!r}"
        )
    return value


def _bbox(value: Any) -> tuple[float, float, float, float]:
    """[west, south, east, north] in degrees.

    Boxes crossing the antimeridian (west > east) are refused, as discover refuses them.
    """
    allowed = (
        "must be [west, south, east, north] in degrees: west <= east in [-180, 180], "
        "south <= north in [-90, 90]"
    )
    if not (
        isinstance(value, list | tuple)
        and len(value) == 4
        and all(_is_number(v) and math.isfinite(v) for v in value)
    ):
        raise ValueError(f"{allowed}, got {value!r}")
    west, south, east, north = value
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise ValueError(f"{allowed}, got {list(value)}")
    return tuple(value)


def _datetime(value: Any) -> str:
    """An RFC 3339 datetime or interval, read by pystac-client as discover reads it.

    Intervals are ``A/B``, ``../B`` or ``A/..``; partial dates such as ``2017-06`` are whole
    periods; start <= end.
    """
    allowed = 'must be an RFC 3339 datetime or interval such as "2017-01-01/2017-12-31"'
    if not isinstance(value, str):
        raise ValueError(f"{allowed}, got {value!r}")
    try:  # parsing only: no request is made
        normalised = ItemSearch("params", datetime=value).get_parameters()["datetime"]
    except Exception as error:  # pystac-client raises a bare Exception for a bad datetime
        raise ValueError(f"{allowed}, got {value!r} ({error})") from error
    start, _, end = normalised.partition("/")
    if ".." not in (start, end) and end and str_to_datetime(start) > str_to_datetime(end):
        raise ValueError(f"{allowed}, got {value!r}, which ends before it starts")
    return value


SCHEMES = FetchParams.allowed_schemes  # by default, fetch allows every scheme it reads


def _store_options(value: Any) -> dict[str, dict[str, Any]]:
    """Per remote scheme, a mapping of obstore options (null: none)."""
    remote = tuple(s for s in SCHEMES if s != "file")
    options = {} if value is None else value
    if not isinstance(options, dict) or not all(
        scheme in remote and isinstance(v, dict) for scheme, v in options.items()
    ):
        raise ValueError(
            f"must map remote schemes {list(remote)} to mappings of obstore options, got {value!r}"
        )
    return dict(options)


@dataclass(frozen=True)
class _Named:
    """A mapping of names to sections of ``cls`` (e.g. ``coregister.sources``)."""

    cls: type


# Every field of every parameter class, with what it allows: a rule, a nested section (its
# class) or named sections (_Named). tests/test_params_validation.py checks that none is left out.
_RULES: dict[type, dict[str, Rule | type | _Named]] = {
    PipelineParams: {
        "catalog": _optional(_text),
        "api_url": _optional(_url),
        "collections": _names(),
        "bbox": _optional(_bbox),
        "datetime": _optional(_datetime),
        "work_dir": _path,
        "store": _path,
        "reports_dir": _path,
        "workers": _integer(0, 1024),  # 0: the stages run in this process
        "fetch": FetchParams,
        "coregister": CoregisterParams,
        "pictures": PictureParams,
        "shard": ShardParams,
    },
    FetchParams: {
        "cache_dir": _path,
        "allowed_schemes": _names(SCHEMES),
        "retries": _integer(0, 20),
        "concurrency": _integer(1, 256),
        "sign": _optional(_choice(SIGNERS)),
        "sign_endpoint": _url,
        "store_options": _store_options,
        "allow_private_hosts": _flag,
        "allow_local_files_from_remote": _flag,
        "allowed_local_folders": _folders,
    },
    CoregisterParams: {
        "sources": _Named(SourceGrid),
        "pairs": _Named(PairSource),
        "max_nodata_share": _number(0, 1),
        "shift_flag_px": _number(0),
        "qa_window_px": _integer(32, MAX_CHIP_PX),
        "block_px": _block_px,
        "max_raster_px": _integer(1),
        "batch_items": _integer(1, 100_000),
    },
    SourceGrid: {"reference": _text, "chip_px": _integer(1, MAX_CHIP_PX), "stride_px": _integer(1)},
    PairSource: {
        "reference": _text,
        "partners": _names(),
        "max_days": _number(0),
        "min_overlap": _number(0, 1, low_open=True),
        "max_cloud_cover": _optional(_number(0, 100)),
        "chip_px": _integer(1, MAX_CHIP_PX),
        "stride_px": _integer(1),
    },
    PictureParams: {"chip_px": _integer(1, MAX_CHIP_PX)},
    ShardParams: {"chips_per_shard": _integer(1, 65536)},
}
# The sample world's (catalogs.sample). The size names are catalogs.sample.pretraining's
# NAMED_SIZES, spelled out: importing them would make every stage depend on the sample world's
# code (tests/test_params_validation.py checks that the two agree).
SAMPLE_PRETRAINING_SIZES = ("small", "corpus")
_SAMPLE_RULES: dict[str, Rule] = {
    "seed": _integer(0),
    "pretraining": _choice(SAMPLE_PRETRAINING_SIZES),
}


def _values(
    rules: Mapping[str, Rule | type | _Named], raw: Any, path: Path | str, key: str
) -> dict[str, Any]:
    """The section ``raw`` (at ``key``) checked against ``rules``, as keyword arguments."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(path, key, f"must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(rules), key=str)
    if unknown:
        raise ParamsError(path, key, f"unknown parameter(s) {unknown}; known: {sorted(rules)}")
    return {name: _value(rules[name], value, path, f"{key}.{name}") for name, value in raw.items()}


def _value(rule: Rule | type | _Named, value: Any, path: Path | str, key: str) -> Any:
    if isinstance(rule, type):
        return _section(rule, value, path, key)
    if isinstance(rule, _Named):
        if value is None:
            value = {}
        if not isinstance(value, dict) or not all(isinstance(n, str) for n in value):
            raise ParamsError(path, key, f"must be a mapping of names to sections, got {value!r}")
        return {
            name: _section(rule.cls, section, path, f"{key}.{name}")
            for name, section in value.items()
        }
    try:
        return rule(value)
    except ValueError as error:
        raise ParamsError(path, key, str(error)) from error


def _section(cls: type[T], raw: Any, path: Path | str, key: str) -> T:
    """An instance of the parameter class ``cls`` from the section ``raw`` (at ``key``)."""
    values = _values(_RULES[cls], raw, path, key)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:  # a required key left out; the class's own check
        raise ParamsError(path, key, str(error)) from error


def _check_pairs(params: PipelineParams, path: Path | str) -> None:
    """Each pair's collections are discovered (in ``collections``).

    The reference is not among its own partners.
    """
    for name, pair in params.coregister.pairs.items():
        key = f"pipeline.coregister.pairs.{name}"
        missing = [c for c in (pair.reference, *pair.partners) if c not in params.collections]
        if missing:
            raise ParamsError(
                path,
                key,
                f"collections {missing} are not in pipeline.collections {list(params.collections)}",
            )
        if pair.reference in pair.partners:
            raise ParamsError(path, key, f"the reference {pair.reference!r} is also a partner")


def load_params(
    path: Path | str = PARAMS_PATH, overrides: dict[str, Any] | None = None
) -> PipelineParams:
    """Read and check the ``pipeline`` section of ``path``.

    ``overrides`` replace its top-level keys (and are checked alike).

    Raises:
        ParamsError: naming the file, the key and what it allows: an unreadable file, an
            unknown or missing section, an unknown key, a value of the wrong type or range.
    """
    try:
        with open(path) as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        raise ParamsError(path, None, f"cannot be read ({error})") from error
    if not isinstance(document, dict):
        raise ParamsError(
            path, None, f"must be a mapping of sections {list(SECTIONS)}, got {document!r}"
        )
    for section in document:
        if section not in SECTIONS:
            raise ParamsError(path, section, f"unknown section; known: {list(SECTIONS)}")
    if "pipeline" not in document:
        raise ParamsError(path, "pipeline", "missing section (the pipeline's parameters)")
    _values(_SAMPLE_RULES, document.get("sample"), path, "sample")
    if not isinstance(document["pipeline"], dict):
        raise ParamsError(path, "pipeline", f"must be a mapping, got {document['pipeline']!r}")
    params = _section(
        PipelineParams, {**document["pipeline"], **(overrides or {})}, path, "pipeline"
    )
    _check_pairs(params, path)
    return params
