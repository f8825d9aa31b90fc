"""Reading a scene's STAC items for model.predict (model/inference/scene_inputs.read_item)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from catalogs.sample.task_scenes import render_task_scene
from catalogs.scene_reading import sensor_block
from model.inference import scene_inputs
from model.inference.scene_inputs import SceneInputError, ScenePolicy, read_item, scene_sources
from tests.http_server import file_server, file_server_process


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96 px segmentation scene: one item, relative hrefs ``./cir.tif`` and ``./dsm.tif``."""
    (item,) = render_task_scene("segmentation", tmp_path_factory.mktemp("scene"), size_px=96)
    return item


def test_relative_hrefs_resolve_against_the_item(scene: Path) -> None:
    item = read_item(str(scene))
    assert {key: asset["href"] for key, asset in item["assets"].items()} == {
        "cir": str(scene.parent / "cir.tif"),
        "dsm": str(scene.parent / "dsm.tif"),
    }
    assert read_item(scene.as_uri())["assets"] == item["assets"]


def test_what_is_not_an_item_is_refused(tmp_path: Path, scene: Path) -> None:
    collection = tmp_path / "collection.json"
    collection.write_text(json.dumps({"type": "Collection", "id": "c"}))
    with pytest.raises(SceneInputError, match=r"collection\.json: not a STAC item"):
        read_item(str(collection))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SceneInputError, match=r"broken\.json: cannot read the item"):
        read_item(str(broken))
    with pytest.raises(SceneInputError, match=r"missing\.json: cannot read the item"):
        read_item(str(tmp_path / "missing.json"))
    with pytest.raises(SceneInputError, match="read items from a path or an http"):
        read_item("ftp://example.com/item.json")


def test_an_oversized_item_is_refused_before_parsing(
    scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scene_inputs, "MAX_ITEM_BYTES", 100)
    with pytest.raises(SceneInputError, match="larger than 100 bytes"):
        read_item(str(scene))


def test_an_item_served_over_http_is_read_from_there(scene: Path, tmp_path: Path) -> None:
    shutil.copytree(scene.parent, tmp_path / "remote" / "scene")
    with file_server_process(tmp_path / "remote") as base:
        url = f"{base}scene/{scene.name}"
        with pytest.raises(SceneInputError, match="allow with --allow-private-hosts"):
            read_item(url)
        item = read_item(url, ScenePolicy(allow_private_hosts=True))
        assert item["assets"]["cir"]["href"] == f"{base}scene/cir.tif"
        sources = scene_sources([item], ["cir", "dsm"], 64)
        remote = sensor_block(
            item["id"], sources.rasters["cir"], sources.grid, Window(0, 0, 64, 64)
        )
    local = scene_sources([read_item(str(scene))], ["cir", "dsm"], 64)
    here = sensor_block("x", local.rasters["cir"], local.grid, Window(0, 0, 64, 64))
    assert sources.grid == local.grid
    assert np.array_equal(remote.data, here.data)


def test_a_remote_item_may_not_name_local_files(scene: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    item = json.loads(scene.read_text())
    item["assets"]["cir"]["href"] = (scene.parent / "cir.tif").as_uri()  # a local file
    (remote / "item.json").write_text(json.dumps(item))
    with file_server(remote) as server:
        policy = ScenePolicy(allow_private_hosts=True)
        with pytest.raises(SceneInputError, match="--allow-local-files-from-remote"):
            read_item(server.url("item.json"), policy)
        allowed = ScenePolicy(allow_private_hosts=True, allow_local_files_from_remote=True)
        read = read_item(server.url("item.json"), allowed)
        assert read["assets"]["cir"]["href"] == (scene.parent / "cir.tif").as_uri()
