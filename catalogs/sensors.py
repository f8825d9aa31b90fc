"""Sensor registry: ``catalogs/sensors.yaml`` loaded into typed, immutable objects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

REGISTRY_PATH = Path(__file__).with_name("sensors.yaml")

SensorKind = Literal["optical", "sar", "elevation", "mask"]
ResamplingDomain = Literal["as_stored", "linear_power"]
_KINDS = ("optical", "sar", "elevation", "mask")
_DOMAINS = ("as_stored", "linear_power")
_METHODS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")
_PUBLISHED_VALUES = ("as_stored", "linear_power")


class RegistryError(ValueError):
    """The sensor registry (or a lookup in it) is invalid."""


@dataclass(frozen=True)
class Band:
    """One band of a sensor."""

    name: str
    common_name: str | None = None
    center_wavelength_nm: float | None = None
    full_width_half_max_nm: float | None = None
    polarization: str | None = None
    gsd_m: float | None = None

    def stac(self) -> dict[str, Any]:
        """This band as a STAC 1.1 ``bands`` entry (eo/sar fields where they apply)."""
        entry: dict[str, Any] = {"name": self.name}
        if self.common_name:
            entry["eo:common_name"] = self.common_name
        if self.center_wavelength_nm is not None:
            entry["eo:center_wavelength"] = round(self.center_wavelength_nm / 1000.0, 6)
        if self.full_width_half_max_nm is not None:
            entry["eo:full_width_half_max"] = round(self.full_width_half_max_nm / 1000.0, 6)
        if self.polarization:
            entry["sar:polarizations"] = [self.polarization]
        if self.gsd_m is not None:
            entry["gsd"] = self.gsd_m
        return entry


@dataclass(frozen=True)
class Resampling:
    """How a sensor is resampled onto another grid during co-registration.

    ``domain == "linear_power"`` names SAR physics: stored dB values are averaged as linear
    power (10 ** (dB / 10)) and converted back, because averaging dB biases the mean low.
    """

    method: str
    domain: ResamplingDomain = "as_stored"


def stac_term(value: str) -> str:
    """A STAC vocabulary term as rules compare it.

    Lower case, spaces and underscores as hyphens (publishers write "Sentinel 2", "sentinel-2" and
    "SENTINEL-1A").
    """
    return str(value).strip().lower().replace(" ", "-").replace("_", "-")


@dataclass(frozen=True)
class MatchRule:
    """When a STAC item holds this sensor: every field given must match (see sensors.yaml).

    ``values`` says how the publisher encodes pixels where it differs from the registry's
    storage: ``linear_power`` for SAR backscatter published in linear power.
    """

    collections: tuple[str, ...] = ()
    constellation: tuple[str, ...] = ()
    platform: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    processing_level: tuple[str, ...] = ()
    values: str = "as_stored"

    def matches(self, item: dict[str, Any]) -> bool:
        """Whether ``item`` (a STAC item dict) satisfies every field of this rule."""
        properties = item.get("properties") or {}
        found = {
            "collections": [item.get("collection")],
            "constellation": [properties.get("constellation")],
            "platform": [properties.get("platform")],
            "instruments": properties.get("instruments") or [],
            "processing_level": [
                properties.get("processing:level"),
                properties.get("s2:product_type"),
            ],
        }
        given = {name: getattr(self, name) for name in found if getattr(self, name)}
        return bool(given) and all(
            {stac_term(v) for v in wanted} & {stac_term(v) for v in found[name] if v}
            for name, wanted in given.items()
        )


def _parse_rule(entry: dict[str, Any]) -> MatchRule:
    fields = {
        key: tuple(value) if isinstance(value, list) else value for key, value in entry.items()
    }
    for key, value in fields.items():
        if key != "values" and not (isinstance(value, tuple) and value):
            raise RegistryError(f"stac rule field {key!r} must be a non-empty list")
    rule = MatchRule(**fields)
    if rule.values not in _PUBLISHED_VALUES:
        raise RegistryError(f"stac rule values {rule.values!r} not in {_PUBLISHED_VALUES}")
    if rule == MatchRule(values=rule.values):
        raise RegistryError("a stac rule needs at least one field to match")
    return rule


@dataclass(frozen=True)
class SensorDescription:
    """What the registry and a store's manifest both say of a sensor: its values and their unit.

    Stored values times ``scale`` plus ``offset`` are in ``unit``; ``nodata`` marks missing
    values; ``model_unit`` is what the model sees (e.g. dB for SAR power).
    """

    name: str
    title: str
    kind: str
    dtype: str
    nodata: float | None
    scale: float
    offset: float
    unit: str
    model_unit: str
    gsd_m: float | None


@dataclass(frozen=True)
class Sensor(SensorDescription):
    """One sensor of the registry: what its files hold and how to read and resample them."""

    kind: SensorKind
    resampling: Resampling
    bands: tuple[Band, ...]
    platform: tuple[str, ...] = ()
    instrument: str | None = None
    sar: dict[str, Any] | None = None
    stac_rules: tuple[MatchRule, ...] = ()

    @property
    def band_names(self) -> tuple[str, ...]:
        """The sensor's band names, in band order."""
        return tuple(b.name for b in self.bands)

    @property
    def num_bands(self) -> int:
        """The number of bands of the sensor."""
        return len(self.bands)

    def band(self, name: str) -> Band:
        """The band called ``name``; KeyError naming the sensor and its bands otherwise."""
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"sensor {self.name!r} has no band {name!r}; bands: {self.band_names}")

    def stac_bands(self) -> list[dict[str, Any]]:
        """STAC 1.1 ``bands`` for an asset holding all of this sensor's bands."""
        bands = []
        for band in self.bands:
            entry = band.stac()
            entry["data_type"] = self.dtype
            # NaN nodata is left implicit: STAC allows the string "nan", but stac-rs (rustac,
            # our STAC API server and geoparquet writer) only parses numbers there.
            if self.nodata is not None and not math.isnan(self.nodata):
                entry["nodata"] = self.nodata
            if self.unit not in ("class", "digital_number"):
                entry["unit"] = self.unit
            if self.scale != 1.0 or self.offset != 0.0:
                entry["raster:scale"] = self.scale
                entry["raster:offset"] = self.offset
            bands.append(entry)
        return bands

    def to_physical(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> physical unit (float32), nodata -> NaN."""
        values = stored.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.nodata is not None and not math.isnan(self.nodata):
            values[stored == self.nodata] = np.nan
        return values


def _parse_sensor(name: str, entry: dict[str, Any]) -> Sensor:
    try:
        kind = entry["kind"]
        if kind not in _KINDS:
            raise RegistryError(f"kind {kind!r} is not one of {_KINDS}")
        resampling = Resampling(**entry["resampling"])
        if resampling.method not in _METHODS:
            raise RegistryError(f"resampling method {resampling.method!r} not in {_METHODS}")
        if resampling.domain not in _DOMAINS:
            raise RegistryError(f"resampling domain {resampling.domain!r} not in {_DOMAINS}")
        np.dtype(entry["dtype"])  # raises TypeError for an unknown dtype
        bands = tuple(Band(**b) for b in entry["bands"])
        if not bands:
            raise RegistryError("no bands")
        nodata = entry.get("nodata")
        return Sensor(
            name=name,
            title=entry["title"],
            kind=kind,
            dtype=entry["dtype"],
            nodata=None if nodata is None else float(nodata),
            scale=float(entry.get("scale", 1.0)),
            offset=float(entry.get("offset", 0.0)),
            unit=entry["unit"],
            model_unit=entry["model_unit"],
            gsd_m=entry.get("gsd_m"),
            resampling=resampling,
            bands=bands,
            platform=tuple(entry.get("platform", ())),
            instrument=entry.get("instrument"),
            sar=entry.get("sar"),
            stac_rules=tuple(_parse_rule(rule) for rule in entry.get("stac", ())),
        )
    except (KeyError, TypeError, RegistryError) as error:
        raise RegistryError(f"sensor {name!r} in the registry is invalid: {error}") from error


def load_registry(path: Path | str = REGISTRY_PATH) -> dict[str, Sensor]:
    """Parse a registry YAML file into ``{name: Sensor}``, validating every entry."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: expected a mapping of sensor name -> entry")
    return {name: _parse_sensor(name, entry) for name, entry in raw.items()}


@cache
def registry() -> dict[str, Sensor]:
    """The project's registry (``catalogs/sensors.yaml``), parsed once."""
    return load_registry()


def get_sensor(name: str) -> Sensor:
    """The registry entry ``name``; a KeyError listing the known sensors otherwise."""
    sensors = registry()
    if name not in sensors:
        raise KeyError(f"unknown sensor {name!r}; the registry has {sorted(sensors)}")
    return sensors[name]
