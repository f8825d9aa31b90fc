"""python -m catalogs.download against a real HTTP server on loopback.

Each dataset's fixture (tests/data) is packed as its publisher packs it (per-season tar.gz,
one zip, per-AOI tarballs, loose split lists) under the publisher's file names and served; the
command downloads, verifies, extracts and builds it, and the catalog must hold the items that
building the fixture itself gives.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from catalogs.builders import BUILDERS
from catalogs.collections import sources
from catalogs.download import (
    CATALOG_SUFFIX,
    QUARANTINE,
    ManifestError,
    Part,
    catalog_stamp,
    done_record,
    downloads_folder,
    load_manifest,
    main,
)
from catalogs.remote_files import CHUNK_BYTES, RemoteFile, verification_problem
from tests.data.bigearthnet.data import make_bigearthnet
from tests.data.geopile.data import make_geopile
from tests.data.mdas.data import make_mdas
from tests.data.millionaid.data import make_millionaid
from tests.data.sen12ms.data import make_sen12ms
from tests.data.sen12ms_cr.data import make_sen12ms_cr
from tests.data.spacenet2.data import make_spacenet2
from tests.data.vaihingen.data import make_vaihingen
from tests.http_server import FileServer, file_server

REPO = Path(__file__).resolve().parents[1]
Packing = list[tuple[str, str, str, Callable[[str], bool]]]  # part, file, archive, member filter


def _top(name: str) -> Callable[[str], bool]:
    return lambda path: path.split("/", 1)[0] == name


def _prefix(prefix: str) -> Callable[[str], bool]:
    return lambda path: path.startswith(prefix)


def _sen12ms(root: Path) -> Packing:
    """One tar.gz per season and modality, each holding its scenes in the season's folder."""
    packing = []
    for season in sorted(p.name for p in root.iterdir()):
        for kind in ("s1", "s2", "lc"):
            member = _prefix(f"{season}/{kind}_")
            packing.append((f"{season}_{kind}", f"{season}_{kind}.tar.gz", "tar.gz", member))
    return packing


def _per_folder(rename: Callable[[str], str]) -> Callable[[Path], Packing]:
    """One tar.gz per top folder (SEN12MS-CR's seasons, SpaceNet's AOIs), named by ``rename``."""

    def packing(root: Path) -> Packing:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        return [(folder, rename(folder), "tar.gz", _top(folder)) for folder in folders]

    return packing


def _spacenet_file(folder: str) -> str:
    aoi = folder.removesuffix("_Train")
    return f"SN2_buildings_train_{aoi}.tar.gz"


def _bigearthnet(root: Path) -> Packing:
    loose = [(p.stem, p.name, "none", _top(p.name)) for p in sorted(root.glob("*.csv"))]
    return [
        ("s1", "BigEarthNet-S1-v1.0.tar.gz", "tar.gz", _top("BigEarthNet-S1-v1.0")),
        ("s2", "BigEarthNet-S2-v1.0.tar.gz", "tar.gz", _top("BigEarthNet-v1.0")),
        *loose,
    ]


def _vaihingen(root: Path) -> Packing:
    images = ("top", "dsm", "gts_for_participants")
    return [
        (
            "images",
            "ISPRS_semantic_labeling_Vaihingen.zip",
            "zip",
            lambda path: path.split("/", 1)[0] in images,
        ),
        (
            "ground_truth",
            "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
            "zip",
            lambda path: "/" not in path and path.endswith(".tif"),
        ),
    ]


# key -> (fixture maker, mode, how the publisher packs it)
PUBLISHED: dict[str, tuple[Callable[[Path], Any], str, Callable[[Path], Packing]]] = {
    "sen12ms": (make_sen12ms, "automatic", _sen12ms),
    "sen12ms-cr": (make_sen12ms_cr, "automatic", _per_folder(lambda f: f"{f}.tar.gz")),
    "mdas": (
        make_mdas,
        "automatic",
        lambda root: [("augsburg", "Augsburg_data_4_publication.zip", "zip", lambda _: True)],
    ),
    "bigearthnet": (make_bigearthnet, "automatic", _bigearthnet),
    "spacenet2": (make_spacenet2, "automatic", _per_folder(_spacenet_file)),
    "millionaid": (
        make_millionaid,
        "guided",
        lambda root: [(s, f"{s}.zip", "zip", _top(s)) for s in ("train", "test")],
    ),
    "vaihingen": (make_vaihingen, "guided", _vaihingen),
}


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _pack(fixture: Path, members: list[str], out: Path, archive: str) -> None:
    if archive == "none":
        (out).write_bytes((fixture / members[0]).read_bytes())
    elif archive == "zip":
        with zipfile.ZipFile(out, "w") as packed:
            for member in members:
                packed.write(fixture / member, member)
    else:
        with tarfile.open(out, "w:gz") as packed:
            for member in members:
                packed.add(fixture / member, member)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _part(name: str, file: Path, url: str | None, archive: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "file": file.name,
        "url": url,
        "size": file.stat().st_size,
        "md5": _md5(file),
        "archive": archive,
        **fields,
    }


def _write_manifest(path: Path, key: str, source: str | None, mode: str, parts: list) -> Path:
    entry = {
        "source": source,
        "mode": mode,
        "host": "loopback",
        "page": "http://127.0.0.1/",
        "licence": "test",
        "parts": parts,
    }
    if mode == "guided":
        entry["guide"] = f"place the files of {key} in the root"
    path.write_text(yaml.safe_dump({key: entry}, sort_keys=False))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FileServer]:
    (tmp_path / "served").mkdir()
    with file_server(tmp_path / "served") as server:
        yield server


def _publish(tmp_path: Path, served: FileServer, key: str) -> tuple[Path, Path, list[str]]:
    """The fixture of ``key``, packed and served; its manifest, its folder and its part files."""
    maker, mode, packing = PUBLISHED[key]
    fixture = Path(maker(tmp_path / "fixture") or tmp_path / "fixture")
    files = _files(fixture)
    parts, names = [], []
    for name, file, archive, member in packing(fixture):
        packed = tmp_path / "served" / file
        _pack(fixture, [f for f in files if member(f)], packed, archive)
        url = served.url(file) if mode == "automatic" else None
        parts.append(_part(name, packed, url, archive))
        names.append(file)
    return _write_manifest(tmp_path / "manifest.yaml", key, key, mode, parts), fixture, names


def _padded_mdas(tmp_path: Path, served: FileServer) -> tuple[Path, Path, str, int]:
    """MDAS published as one zip made larger than a few download chunks (1.5 MB of noise)."""
    manifest, fixture, (file,) = _publish(tmp_path, served, "mdas")
    archive = tmp_path / "served" / file
    with zipfile.ZipFile(archive, "a") as packed:
        packed.writestr("Augsburg_data_4_publication/noise.bin", os.urandom(3 << 19))
    document = yaml.safe_load(manifest.read_text())
    document["mdas"]["parts"][0].update(size=archive.stat().st_size, md5=_md5(archive))
    manifest.write_text(yaml.safe_dump(document))
    return manifest, fixture, file, archive.stat().st_size


def _run(manifest: Path, key: str, root: Path, *extra: str) -> int:
    return main(
        [key, "--root", str(root), "--manifest", str(manifest), "--allow-private-hosts", "--quiet"]
        + list(extra)
    )


def _item_ids(source: str, root: Path) -> list[str]:
    return sorted(item.id for item in BUILDERS[source](root).items)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_each_dataset_downloads_verifies_extracts_and_builds(
    tmp_path: Path, served: FileServer, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, fixture, files = _publish(tmp_path, served, key)
    root = tmp_path / "data" / key
    if PUBLISHED[key][1] == "guided":
        assert _run(manifest, key, root) == 2  # nothing placed yet: the guide
        assert f"place the files of {key} in the root" in capsys.readouterr().out
        for file in files:  # the user places the archives where the guide says
            os.replace(tmp_path / "served" / file, root / file)
    assert _run(manifest, key, root) == 0
    expected = _item_ids(key, fixture)
    assert expected and _item_ids(key, root) == expected
    assert (root.with_name(root.name + CATALOG_SUFFIX) / "catalog.json").is_file()
    extracted = [f for f in _files(root) if f not in files]  # a guided part stays where placed
    assert extracted and set(extracted) <= set(_files(fixture))
    assert all((root / f).read_bytes() == (fixture / f).read_bytes() for f in extracted)
    requests = len(served.requests)
    catalog = root.with_name(root.name + CATALOG_SUFFIX) / "catalog.json"
    built = catalog.stat().st_mtime_ns
    capsys.readouterr()
    assert _run(manifest, key, root) == 0  # everything in place: nothing fetched, extracted, built
    assert len(served.requests) == requests
    out = capsys.readouterr().out
    assert f"0 downloaded, 0 extracted, {len(files)} already in place" in out
    assert f"{key}: catalog up to date -> {catalog}" in out
    assert catalog.stat().st_mtime_ns == built


def test_the_extracted_files_are_the_publisher_s_bytes(tmp_path: Path, served: FileServer) -> None:
    manifest, fixture, _ = _publish(tmp_path, served, "sen12ms")
    root = tmp_path / "data"
    assert _run(manifest, "sen12ms", root, "--no-build") == 0
    assert _files(root) == _files(fixture)
    for name in _files(fixture):
        assert (root / name).read_bytes() == (fixture / name).read_bytes()
    assert not (root.with_name("data" + CATALOG_SUFFIX)).exists()  # --no-build


def _catalog_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in _files(folder)}


def test_the_catalog_is_built_again_when_what_it_was_built_from_changed(
    tmp_path: Path, served: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _, _ = _publish(tmp_path, served, "bigearthnet")
    splits = [f"bigearthnet-{split}" for split in ("train", "val", "test")]
    root = tmp_path / "data"
    catalog = tmp_path / f"data{CATALOG_SUFFIX}"
    assert _run(manifest, "bigearthnet", root, "--parts", "s2", *splits) == 0
    s2_only = _catalog_files(catalog)
    capsys.readouterr()
    assert _run(manifest, "bigearthnet", root) == 0  # S1 extracted as well: built again
    out = capsys.readouterr().out
    assert "1 extracted, 4 already in place" in out and "up to date" not in out
    with_s1 = _catalog_files(catalog)
    assert with_s1 != s2_only
    shutil.rmtree(catalog)  # the catalog deleted, every part in place: built again, the same
    assert _run(manifest, "bigearthnet", root) == 0
    assert "up to date" not in capsys.readouterr().out
    assert _catalog_files(catalog) == with_s1
    other = tmp_path / "elsewhere"  # another --out: built there, then up to date there
    assert _run(manifest, "bigearthnet", root, "--out", str(other)) == 0
    assert "up to date" not in capsys.readouterr().out and (other / "catalog.json").is_file()
    assert _run(manifest, "bigearthnet", root, "--out", str(other)) == 0
    assert "bigearthnet: catalog up to date" in capsys.readouterr().out
    stamp = catalog_stamp(load_manifest(manifest)["bigearthnet"], root.absolute(), other)
    assert stamp is not None and len(stamp["parts"]) == 5


def test_a_guided_dataset_without_parts_builds_what_the_user_placed(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    entry = {"source": "geopile", "mode": "guided", "guide": "unzip it", "build_root": "GeoPileV0"}
    manifest.write_text(yaml.safe_dump({"geopile": {**entry, "parts": []}}))
    root = tmp_path / "geopile"
    assert _run(manifest, "geopile", root) == 2
    make_geopile(root / "GeoPileV0")
    assert _run(manifest, "geopile", root) == 0
    catalog = root.with_name("geopile" + CATALOG_SUFFIX) / "catalog.json"
    assert catalog.is_file()


def test_a_wrong_checksum_is_named_and_nothing_appears(
    tmp_path: Path, served: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _, _ = _publish(tmp_path, served, "mdas")
    document = yaml.safe_load(manifest.read_text())
    document["mdas"]["parts"][0]["md5"] = "0" * 32
    manifest.write_text(yaml.safe_dump(document))
    root = tmp_path / "data"
    assert _run(manifest, "mdas", root) == 1
    error = capsys.readouterr().err
    assert "failed augsburg: Augsburg_data_4_publication.zip: checksum mismatch" in error
    assert _files(root) == []
    assert _files(downloads_folder(root)) == []  # the unverified part is not kept


def test_a_corrupt_archive_is_quarantined_and_the_other_parts_go_on(
    tmp_path: Path, served: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _, files = _publish(tmp_path, served, "sen12ms-cr")
    bad = tmp_path / "served" / files[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated as published
    document = yaml.safe_load(manifest.read_text())
    document["sen12ms-cr"]["parts"][0].update(size=bad.stat().st_size, md5=_md5(bad))
    manifest.write_text(yaml.safe_dump(document))
    root = tmp_path / "data"
    assert _run(manifest, "sen12ms-cr", root) == 1
    error = capsys.readouterr().err
    assert f"{files[0]}: cannot read the tar.gz archive" in error
    quarantined = downloads_folder(root) / QUARANTINE / files[0]
    assert quarantined.read_bytes() == bad.read_bytes()
    top = sorted(p.name for p in root.iterdir())
    assert top == sorted(f.removesuffix(".tar.gz") for f in files[1:])  # the others extracted


def test_a_dropped_connection_resumes_with_a_range_request(
    tmp_path: Path, served: FileServer
) -> None:
    manifest, fixture, file, size = _padded_mdas(tmp_path, served)
    served.faults.drops[f"/{file}"] = size // 2
    root = tmp_path / "data"
    assert _run(manifest, "mdas", root) == 0
    ranges = [r.range for r in served.requests if r.path == f"/{file}"]
    assert ranges[0] is None and ranges[1] not in (None, "bytes=0-"), ranges
    assert _item_ids("mdas", root) == _item_ids("mdas", fixture)


def test_a_download_killed_mid_file_resumes_where_it_stopped(
    tmp_path: Path, served: FileServer
) -> None:
    manifest, fixture, file, size = _padded_mdas(tmp_path, served)
    stall = size // 2
    served.faults.stalls[f"/{file}"] = stall
    root = tmp_path / "data"
    command = [sys.executable, "-m", "catalogs.download", "mdas", "--root", str(root)]
    process = subprocess.Popen(
        [*command, "--manifest", str(manifest), "--allow-private-hosts", "--quiet"], cwd=REPO
    )
    partial = downloads_folder(root) / f"{file}.part"
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.stat().st_size >= CHUNK_BYTES):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    served.faults.release.set()
    assert not (root / "Augsburg_data_4_publication").exists()  # nothing half-extracted
    kept = partial.stat().st_size  # what came before the kill, in whole chunks
    assert 0 < kept <= stall
    assert _run(manifest, "mdas", root) == 0
    ranges = [r.range for r in served.requests if r.path == f"/{file}"]
    assert ranges[-1] == f"bytes={kept}-"
    assert _item_ids("mdas", root) == _item_ids("mdas", fixture)


@pytest.mark.parametrize("archive", ["tar.gz", "zip"])
def test_an_archive_member_that_leaves_the_root_is_refused(
    tmp_path: Path, served: FileServer, archive: str, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = tmp_path / "served" / f"evil.{archive}"
    if archive == "zip":
        with zipfile.ZipFile(packed, "w") as out:
            out.writestr("fine.txt", b"ok")
            out.writestr("../escaped.txt", b"gotcha")
    else:
        with tarfile.open(packed, "w:gz") as out:
            for name, data in (("fine.txt", b"ok"), ("../escaped.txt", b"gotcha")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    part = _part("evil", packed, served.url(packed.name), archive)
    manifest = _write_manifest(tmp_path / "m.yaml", "evil", None, "automatic", [part])
    root = tmp_path / "data" / "evil"
    assert _run(manifest, "evil", root) == 1
    reason = "would leave the dataset folder" if archive == "zip" else "member refused"
    assert f"failed evil: evil.{archive}: " in (err := capsys.readouterr().err) and reason in err
    assert not (tmp_path / "data" / "escaped.txt").exists()
    assert not (root / "fine.txt").exists()  # nothing of a refused archive appears
    assert (downloads_folder(root) / QUARANTINE / packed.name).is_file()


def test_loopback_is_refused_unless_allowed(
    tmp_path: Path, served: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _, _ = _publish(tmp_path, served, "mdas")
    root = tmp_path / "data"
    code = main(["mdas", "--root", str(root), "--manifest", str(manifest), "--quiet"])
    assert code == 1
    assert "allow with --allow-private-hosts" in capsys.readouterr().err
    assert served.requests == []


def test_list_prints_the_plan_and_fetches_nothing(
    tmp_path: Path, served: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, _, _ = _publish(tmp_path, served, "bigearthnet")
    root = tmp_path / "data"
    assert _run(manifest, "bigearthnet", root, "--parts", "s2", "--list") == 0
    (line, total) = capsys.readouterr().out.splitlines()[1:]
    size = (tmp_path / "served" / "BigEarthNet-S2-v1.0.tar.gz").stat().st_size
    assert line.split()[0] == "s2" and "to download" in line
    assert line.endswith(served.url("BigEarthNet-S2-v1.0.tar.gz"))
    assert total.startswith(f"  {size / 1000:.1f} KB in all, {size / 1000:.1f} KB left")
    assert served.requests == [] and not root.exists()
    assert _run(manifest, "bigearthnet", root, "--parts", "s2", "--no-build") == 0
    assert done_record(root, load_manifest(manifest)["bigearthnet"].parts[1]).is_file()
    capsys.readouterr()
    assert _run(manifest, "bigearthnet", root, "--parts", "s2", "--list") == 0
    assert "in place" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("file", "../etc/passwd", "parts[0].file: '../etc/passwd' is not a plain name"),
        ("name", "a/b", "parts[0].name: 'a/b' is not a plain name"),
        ("url", "file:///etc/passwd", "parts[0].url: 'file:///etc/passwd' is not one of"),
        ("md5", "xyz", "parts[0].md5: 'xyz' is not a hex digest"),
        ("archive", "rar", "parts[0].archive: expected one of"),
    ],
)
def test_a_bad_manifest_entry_is_named(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    part = {"name": "p", "file": "p.zip", "url": "https://example.org/p.zip", "archive": "zip"}
    manifest = _write_manifest(
        tmp_path / "m.yaml", "d", None, "automatic", [{**part, field: value}]
    )
    with pytest.raises(ManifestError, match=f"d.{message}".replace("[", r"\[").replace("]", r"\]")):
        load_manifest(manifest)


def test_the_manifest_has_every_source_and_benchmark_dataset() -> None:
    manifest = load_manifest()
    assert sorted(manifest) == sorted(sources())
    for key, dataset in manifest.items():
        assert dataset.source == key and dataset.page.startswith("https://")
        for part in dataset.parts:
            assert (part.url or "https://").startswith("https://"), (key, part.name)
            if key != "sen12ms-cr":  # its publisher lists no checksum (see its checksums_from)
                assert part.checksum, (key, part.name)
        assert dataset.mode == "automatic" or dataset.guide


def test_a_published_md5_that_reads_as_a_multihash_still_verifies(tmp_path: Path) -> None:
    # The MD5 of b"110701" starts 120e: bare, it parsed as a valid 14-byte SHA-256 multihash,
    # so the file failed verification against a SHA-256 (the CI failure of a random zip).
    path = tmp_path / "part.zip"
    path.write_bytes(b"110701")
    md5 = hashlib.md5(b"110701").hexdigest()
    assert md5.startswith("120e")
    part = Part("p", "part.zip", None, 6, md5, None, "none")
    assert verification_problem(path, RemoteFile(str(path), "", "file", 6, part.checksum)) is None
    path.write_bytes(b"110702")
    problem = verification_problem(path, RemoteFile(str(path), "", "file", 6, part.checksum))
    assert problem is not None and problem.startswith(f"checksum mismatch: expected d50110{md5}")
