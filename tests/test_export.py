"""An exported encoder reloads from its weights and STAC MLM card alone (model/export.py,
model/model_card.py), and computes the same features; a damaged export gives an error that says
what is wrong."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from catalogs.stac import validate_core
from catalogs.store_format import SensorManifest, read_manifest
from model import load_pretrained
from model.datasets.transforms import band_moments
from model.export import export_pretrained
from model.model_card import ANY_TIME, CARD_FILE, MLM_SCHEMA, WEIGHTS_FILE, ModelCardError
from model.nn.encoder import encoder_config
from model.nn.msgfm import MsGFM
from tests.pipeline_setup import busy_reference

INPUT_PX = 64
TRAINING = {"steps": 3, "seed": 0}


@pytest.fixture(scope="module")
def sensors(
    tmp_path_factory: pytest.TempPathFactory, sample_world: Path
) -> dict[str, SensorManifest]:
    """The manifests of a store of every pretraining source (64 px chips)."""
    return read_manifest(busy_reference(tmp_path_factory, sample_world).store).sensors


@pytest.fixture(scope="module")
def model(sensors: dict[str, SensorManifest]) -> MsGFM:
    """A tiny msGFM over the store's sensors, with its parameters moved off their init."""
    torch.manual_seed(0)
    channels = {name: len(m.band_names) for name, m in sensors.items()}
    network = MsGFM(channels, encoder_config("tiny", input_px=INPUT_PX, window_size=2))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return network.eval()


@pytest.fixture(scope="module")
def export(
    tmp_path_factory: pytest.TempPathFactory, model: MsGFM, sensors: dict[str, SensorManifest]
) -> Path:
    """The model exported once (read-only for tests: copy before damaging)."""
    out = tmp_path_factory.mktemp("export") / "msgfm"
    export_pretrained(model, out, sensors, training={**TRAINING, "store": Path("geopile2.zarr")})
    return out


def copy_export(export: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for name in (CARD_FILE, WEIGHTS_FILE):
        (out / name).write_bytes((export / name).read_bytes())
    return out


def test_the_reloaded_encoder_gives_the_same_features(
    export: Path, model: MsGFM, sensors: dict[str, SensorManifest]
) -> None:
    encoder = load_pretrained(export)
    assert encoder.sensors == tuple(model.heads.embeddings)
    assert not encoder.training
    generator = torch.Generator().manual_seed(1)
    for name, manifest in sensors.items():
        image = torch.randn(2, len(manifest.band_names), INPUT_PX, INPUT_PX, generator=generator)
        with torch.no_grad():
            expected = model.features(name, image)
            torch.testing.assert_close(encoder(name, image), expected, rtol=0, atol=0)
        assert expected.shape == (2, model.encoder.config.out_channels, 2, 2)


def test_the_card_dates_the_data_not_the_export_so_an_export_is_reproducible(
    export: Path, model: MsGFM, sensors: dict[str, SensorManifest], tmp_path: Path
) -> None:
    card = json.loads((export / CARD_FILE).read_text())["properties"]
    assert (card["datetime"], card["start_datetime"], card["end_datetime"]) == (None, *ANY_TIME)
    acquired = ("2017-06-01T10:30:00Z", "2018-05-07T10:00:00Z")
    written = []
    for attempt in range(2):
        if attempt:
            time.sleep(1.1)  # a card stamped with the clock would differ now
        out = tmp_path / f"export{attempt}"
        export_pretrained(model, out, sensors, training=TRAINING, acquired=acquired)
        written.append({name: (out / name).read_bytes() for name in (CARD_FILE, WEIGHTS_FILE)})
    assert written[0] == written[1]
    card = json.loads(written[0][CARD_FILE])
    assert validate_core(card) == []
    assert (card["properties"]["start_datetime"], card["properties"]["end_datetime"]) == acquired


def test_the_card_is_stac_and_lists_every_sensor_with_its_normalisation(
    export: Path, sensors: dict[str, SensorManifest]
) -> None:
    card = json.loads((export / CARD_FILE).read_text())
    assert validate_core(card) == []
    assert MLM_SCHEMA in card["stac_extensions"]
    properties = card["properties"]
    assert properties["mlm:framework"] == "PyTorch" and properties["mlm:pretrained"]
    assert properties["msgfm:training"] == {**TRAINING, "store": "geopile2.zarr"}
    inputs = {entry["name"]: entry for entry in properties["mlm:input"]}
    assert set(inputs) == set(sensors)
    listed_bands = {band["name"] for band in card["assets"]["weights"]["bands"]}
    for name, manifest in sensors.items():
        entry = inputs[name]
        assert entry["bands"] == list(manifest.band_names)
        assert set(entry["bands"]) <= listed_bands
        assert entry["input"]["shape"] == [-1, len(manifest.band_names), INPUT_PX, INPUT_PX]
        mean, std = band_moments(manifest)
        assert {s["type"] for s in entry["value_scaling"]} == {"z-score"}
        assert torch.equal(torch.tensor([s["mean"] for s in entry["value_scaling"]]), mean)
        assert torch.equal(torch.tensor([s["stddev"] for s in entry["value_scaling"]]), std)
    encoder = load_pretrained(export / CARD_FILE)
    for name, manifest in sensors.items():
        for loaded, expected in zip(
            encoder.normalisation[name], band_moments(manifest), strict=True
        ):
            assert torch.equal(loaded, expected)
    hyperparameters = properties["mlm:hyperparameters"]
    assert hyperparameters["input_px"] == INPUT_PX and hyperparameters["patch_px"] == 4
    assert hyperparameters["moe"]["num_experts"] == 8
    weights = card["assets"]["weights"]
    assert weights["roles"] == ["mlm:model", "mlm:weights"]
    assert weights["mlm:artifact_type"] == "safetensors"
    tensors = load_file(str(export / weights["href"]))
    assert properties["mlm:total_parameters"] == sum(t.numel() for t in tensors.values())


def test_the_export_holds_the_encoder_and_embeddings_only(export: Path, model: MsGFM) -> None:
    assert sorted(p.name for p in export.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    tensors = load_file(str(export / WEIGHTS_FILE))
    assert not [key for key in tensors if "decoder" in key]
    expected = {f"encoder.{key}" for key in model.encoder.state_dict()} | {
        f"embeddings.{sensor}.{key}"
        for sensor, embedding in model.heads.embeddings.items()
        for key in embedding.state_dict()
    }
    assert set(tensors) == expected
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())


def test_an_unknown_sensor_names_the_known_ones(export: Path) -> None:
    with pytest.raises(KeyError, match="sentinel1_grd"):
        load_pretrained(export)("landsat8", torch.zeros(1, 7, INPUT_PX, INPUT_PX))


def test_weights_without_a_sensors_embedding_are_refused_by_name(
    export: Path, tmp_path: Path
) -> None:
    out = copy_export(export, tmp_path)
    tensors = load_file(str(out / WEIGHTS_FILE))
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("embeddings.rgb.")},
        str(out / WEIGHTS_FILE),
    )
    with pytest.raises(ValueError, match="has no embedding for sensor.*'rgb'"):
        load_pretrained(out)


def test_a_card_of_another_architecture_is_refused(export: Path, tmp_path: Path) -> None:
    out = copy_export(export, tmp_path)
    card = json.loads((out / CARD_FILE).read_text())
    card["properties"]["mlm:hyperparameters"]["embed_dim"] = 48
    (out / CARD_FILE).write_text(json.dumps(card))
    mismatch = r"architecture mismatch.*\(32,\) in the weights, \(48,\) in the card"
    with pytest.raises(ValueError, match=mismatch):
        load_pretrained(out)


def test_a_card_without_an_encoder_field_is_refused(export: Path, tmp_path: Path) -> None:
    out = copy_export(export, tmp_path)
    card = json.loads((out / CARD_FILE).read_text())
    del card["properties"]["mlm:hyperparameters"]["window_size"]
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="missing \\['window_size'\\]"):
        load_pretrained(out)


def _edit_card(out: Path, edit: Callable[[dict], object]) -> None:
    card = json.loads((out / CARD_FILE).read_text())
    edit(card)
    (out / CARD_FILE).write_text(json.dumps(card))  # NaN written as JSON's NaN extension


def _weights_outside(out: Path) -> None:
    """The weights moved beside the export folder, the href following them."""
    (out / WEIGHTS_FILE).rename(out.parent / "outside.safetensors")
    _edit_card(out, lambda card: card["assets"]["weights"].update(href="../outside.safetensors"))


def _weights_linked_outside(out: Path) -> None:
    """The weights moved beside the export folder, a symbolic link left in their place."""
    (out / WEIGHTS_FILE).rename(out.parent / "outside.safetensors")
    (out / WEIGHTS_FILE).symlink_to(out.parent / "outside.safetensors")


def _truncated_weights(out: Path) -> None:
    data = (out / WEIGHTS_FILE).read_bytes()
    (out / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _scaling(card: dict, value: float) -> None:
    card["properties"]["mlm:input"][1]["value_scaling"][2]["stddev"] = value


_STDDEV = (
    r": properties\.mlm:input\[1\] \('\w+'\)\.value_scaling\[2\]\.stddev must be a finite "
    r"number above 0, not "
)
DAMAGES = {
    "href outside": (
        _weights_outside,
        CARD_FILE,
        r": assets\.weights\.href '\.\./outside\.safetensors' leads outside",
    ),
    "href through a link": (
        _weights_linked_outside,
        CARD_FILE,
        r": assets\.weights\.href '\./encoder\.safetensors' leads outside",
    ),
    "truncated weights": (
        _truncated_weights,
        WEIGHTS_FILE,
        r" \(assets\.weights\.href of .*\): not a whole safetensors file",
    ),
    "not JSON": (
        lambda out: (out / CARD_FILE).write_text('{"type": "Feature", '),
        CARD_FILE,
        ": not a JSON model card",
    ),
    "no hyperparameters": (
        lambda out: _edit_card(out, lambda card: card["properties"].pop("mlm:hyperparameters")),
        CARD_FILE,
        r": properties\.mlm:hyperparameters is missing",
    ),
    "input_px a string": (
        lambda out: _edit_card(
            out, lambda card: card["properties"]["mlm:hyperparameters"].update(input_px="64")
        ),
        CARD_FILE,
        r": properties\.mlm:hyperparameters\.input_px must be an integer, not '64'",
    ),
    "std 0": (
        lambda out: _edit_card(out, lambda card: _scaling(card, 0)),
        CARD_FILE,
        _STDDEV + "0$",
    ),
    "std negative": (
        lambda out: _edit_card(out, lambda card: _scaling(card, -0.5)),
        CARD_FILE,
        _STDDEV + "-0.5$",
    ),
    "std NaN": (
        lambda out: _edit_card(out, lambda card: _scaling(card, math.nan)),
        CARD_FILE,
        _STDDEV + "nan$",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_hostile_card_is_refused_naming_the_file_and_field(
    export: Path, tmp_path: Path, damage: str
) -> None:
    out = copy_export(export, tmp_path)
    spoil, file, field = DAMAGES[damage]
    spoil(out)
    with pytest.raises(ModelCardError, match=re.escape(str(out / file)) + field):
        load_pretrained(out)
