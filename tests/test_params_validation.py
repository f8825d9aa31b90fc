"""Every parameter of params.yaml is checked when the file is loaded: a hostile or careless value
is refused with the file, the full key and what the key allows, and the command line says so
in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogs.sample.pretraining import NAMED_SIZES
from pipeline.__main__ import main
from pipeline.params import SAMPLE_PRETRAINING_SIZES, ParamsError, PipelineParams, load_params

REPO = Path(__file__).resolve().parents[1]
PAIR = {"reference": "sen12ms", "partners": ["mdas"]}


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _repo_params_with(key: str, value: Any) -> dict[str, Any]:
    """The repository's params.yaml (with one pair declared) with the dotted ``key`` set."""
    document = yaml.safe_load((REPO / "params.yaml").read_text())
    document["pipeline"]["coregister"]["pairs"] = {"p": dict(PAIR)}
    *parents, last = key.split(".")
    section = document
    for name in parents:
        section = section[name]
    section[last] = value
    return document


def _keys(cls: type, prefix: str) -> list[str]:
    """The dotted key of every field of a parameter class, nested sections included (one
    named entry of ``sources`` and ``pairs``)."""
    keys = []
    for field in dataclasses.fields(cls):
        key = f"{prefix}.{field.name}"
        keys.append(key)
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        if dataclasses.is_dataclass(default):
            keys.extend(_keys(type(default), key))
    keys.extend(
        f"pipeline.coregister.sources.sen12ms.{name}"
        for name in ("reference", "chip_px", "stride_px")
    )
    keys.extend(f"pipeline.coregister.pairs.p.{name}" for name in PAIR)
    return keys


ALL_KEYS = sorted(set(_keys(PipelineParams, "pipeline"))) + ["sample.seed", "sample.pretraining"]


def test_the_repository_params_and_configs_load() -> None:
    for path in [REPO / "params.yaml", *sorted((REPO / "configs/pipeline").glob("*.yaml"))]:
        assert isinstance(load_params(path), PipelineParams)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_parameter_refuses_a_value_of_no_allowed_kind(tmp_path: Path, key: str) -> None:
    # -1.5 is no count, size, share, path, name, list, mapping or interval.
    path = _write(tmp_path, _repo_params_with(key, -1.5))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")
    assert "-1.5" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (
            "pipeline.coregister.sources.sen12ms.chip_px",
            0,
            "must be an integer in [1, 4096], got 0",
        ),
        (
            "pipeline.coregister.sources.sen12ms.stride_px",
            "256",
            "must be an integer >= 1, got '256'",
        ),
        (
            "pipeline.coregister.pairs.p.chip_px",
            256.0,
            "must be an integer in [1, 4096], got 256.0",
        ),
        ("pipeline.pictures.chip_px", 100_000, "must be an integer in [1, 4096], got 100000"),
        ("pipeline.coregister.qa_window_px", 0, "must be an integer in [32, 4096], got 0"),
        (
            "pipeline.coregister.block_px",
            16,
            "must be 0 (the whole grid at once) or an integer >= 256, got 16",
        ),
        ("pipeline.coregister.max_nodata_share", 1.5, "must be a number in [0, 1], got 1.5"),
        ("pipeline.coregister.max_nodata_share", True, "must be a number in [0, 1], got True"),
        ("pipeline.coregister.shift_flag_px", float("nan"), "must be a number >= 0, got nan"),
        ("pipeline.coregister.max_raster_px", 0, "must be an integer >= 1, got 0"),
        (
            "pipeline.coregister.pairs.p.max_cloud_cover",
            101,
            "must be a number in [0, 100], got 101",
        ),
        ("pipeline.fetch.retries", -1, "must be an integer in [0, 20], got -1"),
        ("pipeline.fetch.concurrency", 0, "must be an integer in [1, 256], got 0"),
        (
            "pipeline.fetch.allowed_schemes",
            ["file", "htps"],
            "must be one of ['file', 'http', 'https', 's3', 'gs'], got 'htps'",
        ),
        ("pipeline.fetch.sign", "aws", "must be one of ['planetary_computer'], got 'aws'"),
        (
            "pipeline.fetch.store_options",
            {"ftp": {}},
            "must map remote schemes ['http', 'https', 's3', 'gs'] to mappings of obstore options, "
            "got {'ftp': {}}",
        ),
        ("pipeline.workers", "2", "must be an integer in [0, 1024], got '2'"),
        ("pipeline.shard.chips_per_shard", 0, "must be an integer in [1, 65536], got 0"),
        (
            "pipeline.collections",
            "sen12ms",
            "must be a non-empty list of distinct names, got 'sen12ms'",
        ),
        ("pipeline.store", None, "must be a path (a non-empty string), got None"),
        ("pipeline.api_url", "earth-search", "must be an http(s) URL, got 'earth-search'"),
        (
            "pipeline.bbox",
            [10, 50, 5, 40],
            "must be [west, south, east, north] in degrees: west <= east in [-180, 180], "
            "south <= north in [-90, 90], got [10, 50, 5, 40]",
        ),
        (
            "pipeline.bbox",
            [0, -91, 1, 0],
            "must be [west, south, east, north] in degrees: west <= east in [-180, 180], "
            "south <= north in [-90, 90], got [0, -91, 1, 0]",
        ),
        (
            "pipeline.datetime",
            "2017-12-31/2017-01-01",
            'must be an RFC 3339 datetime or interval such as "2017-01-01/2017-12-31", got '
            "'2017-12-31/2017-01-01', which ends before it starts",
        ),
        ("sample.seed", -1, "must be an integer >= 0, got -1"),
        ("sample.pretraining", "large", "must be one of ['small', 'corpus'], got 'large'"),
    ],
)
def test_a_value_out_of_range_is_named_with_what_is_allowed(
    tmp_path: Path, key: str, value: Any, reason: str
) -> None:
    path = _write(tmp_path, _repo_params_with(key, value))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value) == f"{path}: {key}: {reason}"


@pytest.mark.parametrize(
    "value", ["2017-06", "2017-01-01/2017-12-31", "../2020-01-01T00:00:00Z", "2017-06-01/.."]
)
def test_datetimes_and_open_intervals_are_accepted(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, _repo_params_with("pipeline.datetime", value))
    assert load_params(path).datetime == value


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"pipline": {"workers": 1}}, "pipline: unknown section; known: ['pipeline', 'sample']"),
        ({"sample": {"seed": 0}}, "pipeline: missing section (the pipeline's parameters)"),
        ({"pipeline": None}, "pipeline: must be a mapping, got None"),
        (["pipeline"], "must be a mapping of sections ['pipeline', 'sample'], got ['pipeline']"),
    ],
)
def test_an_unknown_or_missing_section_is_an_error(
    tmp_path: Path, document: Any, message: str
) -> None:
    path = _write(tmp_path, document)
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value) == f"{path}: {message}"


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"pipeline": {}})
    assert load_params(path, {"workers": 0}).workers == 0
    with pytest.raises(ParamsError) as caught:
        load_params(path, {"workers": -2})
    assert str(caught.value) == f"{path}: pipeline.workers: must be an integer in [0, 1024], got -2"


def test_the_command_line_prints_one_line_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, {"pipline": {"store": "elsewhere.zarr"}})
    assert main(["discover", "--params", str(path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: {path}: pipline: unknown section; known: ['pipeline', 'sample']\n"
    )
    assert main(["discover", "--params", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {tmp_path / 'absent.yaml'}: cannot be read ([Errno 2] No such file or directory"
    )


def test_the_sample_size_names_are_those_of_the_sample_world() -> None:
    assert SAMPLE_PRETRAINING_SIZES == tuple(NAMED_SIZES)
