"""The one helper for atomic writes: all or nothing, strict JSON, folders swapped whole."""

import json
import math

import pytest

from catalogs.atomic_files import (
    atomic_folder,
    atomic_open,
    finite_or_none,
    replace_folder,
    write_json,
    write_text,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "report.md", "old\n")
    with pytest.raises(RuntimeError, match="disk"), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("disk went away")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_json_is_strict_and_names_the_place_of_a_nan(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"metrics\.json: \$\.qa\[1\]\.shift is not a finite"):
        write_json(target, {"qa": [{"shift": 0.5}, {"shift": math.nan}]})
    assert not target.exists() and not list(tmp_path.iterdir())
    write_json(target, {"qa": [{"shift": finite_or_none(math.inf)}, {"shift": 0.5}]})
    assert json.loads(target.read_text()) == {"qa": [{"shift": None}, {"shift": 0.5}]}


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "catalog"
    with atomic_folder(target) as staging:
        (staging / "a.json").write_text("1")
    with pytest.raises(OSError), atomic_folder(target) as staging:
        (staging / "b.json").write_text("2")
        raise OSError("killed")
    assert [p.name for p in target.iterdir()] == ["a.json"]
    with atomic_folder(target) as staging:
        (staging / "b.json").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog"]


def test_a_folder_replaced_through_a_named_retired_folder_leaves_neither_behind(tmp_path):
    target, new, retired = tmp_path / "store", tmp_path / "store.partial", tmp_path / "store.old"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    new.mkdir()
    (new / "new.bin").write_bytes(b"new")
    replace_folder(new, target, retired)
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
