"""Download a source or benchmark dataset from its publisher, verified and resumable.

Example::

    python -m catalogs.download sen12ms --root /data/SEN12MS --list   # what would be fetched
    python -m catalogs.download sen12ms --root /data/SEN12MS --parts spring_s1 spring_s2

Each dataset of ``catalogs/downloads.yaml`` (the manifest) is a list of parts, the files its
publisher distributes (archives, mostly), with their URLs, sizes and checksums as the publisher or
TorchGeo lists them. A part is downloaded into ``<root>.downloads/`` (beside the root, so that
the builders, which read every folder of the root, never see it) through the project's one
download core (:mod:`catalogs.remote_files`: the access policy, HTTP Range resumption of an
interrupted ``.part`` file, retries, size and checksum verified before the file appears), then
extracted into ``<root>`` in the publisher's own layout, the one ``python -m catalogs.build``
reads; the catalog is built at the end, unless it was last built from the same extracted parts
(``<root>.downloads/catalog.built.json``). An extraction is staged in a folder of its own and
moved into place file by file (each a rename), and ``<root>.downloads/<file>.done`` records it
last, so a run killed at any point redoes at most the part it was in, and a second run with
everything in place downloads, extracts and builds nothing.

A *guided* dataset (a licence to accept, a request form, a browser-only cloud drive) cannot be
fetched by a program: the command prints what to download, from where and where to put it, then
verifies and extracts whatever the user placed in ``<root>`` or ``<root>.downloads/``.

Archives are input, not instructions: a tar member that is absolute, leaves the folder, links
outside it or is a device is refused (tarfile's ``data`` filter), and so is a zip member whose
name is absolute or holds ``..``. A part whose archive cannot be read is moved to
``<root>.downloads/quarantine/`` and named in the failures; the other parts go on. The
catalog goes to ``<root>.stac/`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from tqdm import tqdm

from catalogs.atomic_files import write_json
from catalogs.remote_files import (
    REMOTE_SCHEMES,
    AssetError,
    RemoteAccess,
    RemoteFile,
    download,
    unsigned,
    verification_problem,
)

MANIFEST = Path(__file__).with_name("downloads.yaml")
DOWNLOADS_SUFFIX = ".downloads"  # beside the root: the fetched files, .part and .done records
CATALOG_SUFFIX = ".stac"  # beside the root: the catalog built at the end
QUARANTINE = "quarantine"  # in the downloads folder: parts whose archive could not be read
CATALOG_RECORD = "catalog.built.json"  # in the downloads folder: what the catalog was built from
ARCHIVES = ("tar.gz", "tar", "zip", "none")
MODES = ("automatic", "guided")
SHA256_MULTIHASH = "1220"  # multihash prefix of a 32-byte SHA-256 digest
# Multihash prefix of a 16-byte MD5 digest (code 0xd5 as the varint d5 01, length 0x10). A bare
# MD5 is ambiguous: one starting 120e reads as a valid 14-byte SHA-256 multihash.
MD5_MULTIHASH = "d50110"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a file or part name: never a path


class ManifestError(ValueError):
    """The manifest is not what this module reads; the message names the entry and field."""


@dataclass(frozen=True)
class Part:
    """One file a publisher distributes.

    Attributes:
        name: its short name, for ``--parts``.
        file: its file name as published (a plain name, never a path).
        url: where it is (None: the user downloads it).
        size: its size in bytes, where published.
        md5: its MD5 hex digest, where published.
        sha256: its SHA-256 hex digest, where published.
        archive: ``tar.gz``, ``tar``, ``zip``, or ``none`` (placed in the root as it is).
    """

    name: str
    file: str
    url: str | None
    size: int | None
    md5: str | None
    sha256: str | None
    archive: str

    @property
    def checksum(self) -> str | None:
        """What :mod:`catalogs.remote_files` verifies: a SHA-256 or an MD5 multihash."""
        if self.sha256:
            return SHA256_MULTIHASH + self.sha256.lower()
        return MD5_MULTIHASH + self.md5.lower() if self.md5 else None


@dataclass(frozen=True)
class Dataset:
    """A dataset of the manifest.

    Attributes:
        key: its manifest key.
        source: the ``catalogs.build`` source its layout is (None: no builder).
        mode: ``automatic`` or ``guided``.
        host: who serves it.
        page: its landing page.
        licence: its licence.
        parts: the files it is distributed as.
        guide: for a guided dataset, what the user must do.
        build_root: the folder under the root that ``catalogs.build`` reads ("" the root).
        checksums_from: where the sizes and checksums come from.
    """

    key: str
    source: str | None
    mode: str
    host: str
    page: str
    licence: str
    parts: tuple[Part, ...]
    guide: str = ""
    build_root: str = ""
    checksums_from: str = ""

    def selected(self, names: Sequence[str] | None) -> list[Part]:
        """The parts named (all with None), in manifest order.

        Raises:
            ValueError: naming the unknown parts and the known ones.
        """
        if not names:
            return list(self.parts)
        known = [part.name for part in self.parts]
        if unknown := sorted(set(names) - set(known)):
            raise ValueError(f"{self.key}: unknown parts {unknown}; its parts: {known}")
        return [part for part in self.parts if part.name in names]


def load_manifest(path: Path = MANIFEST) -> dict[str, Dataset]:
    """The datasets of a manifest, each field checked.

    Raises:
        ManifestError: naming the dataset, part and field that is wrong.
    """
    document = yaml.safe_load(Path(path).read_text())
    if not isinstance(document, dict):
        raise ManifestError(f"{path}: expected a mapping of datasets")
    return {key: _dataset(key, entry, path) for key, entry in document.items()}


def _dataset(key: str, entry: Any, path: Path) -> Dataset:
    where = f"{path}: {key}"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a mapping")
    if entry.get("mode") not in MODES:
        raise ManifestError(f"{where}.mode: expected one of {MODES}, got {entry.get('mode')!r}")
    parts = entry.get("parts")
    if not isinstance(parts, list) or not (parts or entry["mode"] == "guided"):
        raise ManifestError(f"{where}.parts: expected a list of parts (empty: guided only)")
    checked = tuple(_part(f"{where}.parts[{i}]", part) for i, part in enumerate(parts))
    if len({part.name for part in checked}) < len(checked):
        raise ManifestError(f"{where}.parts: part names repeat")
    if len({part.file for part in checked}) < len(checked):
        raise ManifestError(f"{where}.parts: file names repeat")
    if entry["mode"] == "guided" and not entry.get("guide"):
        raise ManifestError(f"{where}.guide: a guided dataset needs its guide")
    build_root = str(entry.get("build_root", ""))
    if build_root and not all(_NAME.fullmatch(p) for p in build_root.split("/")):
        raise ManifestError(f"{where}.build_root: {build_root!r} is not a relative folder")
    return Dataset(
        key=key,
        source=entry.get("source"),
        mode=entry["mode"],
        host=str(entry.get("host", "")),
        page=str(entry.get("page", "")),
        licence=str(entry.get("licence", "")),
        parts=checked,
        guide=" ".join(str(entry.get("guide", "")).split()),
        build_root=build_root,
        checksums_from=" ".join(str(entry.get("checksums_from", "")).split()),
    )


def _part(where: str, entry: Any) -> Part:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a mapping")
    for field_name in ("name", "file"):
        value = entry.get(field_name)
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise ManifestError(f"{where}.{field_name}: {value!r} is not a plain name")
    url = entry.get("url")
    if url is not None and urlsplit(str(url)).scheme.lower() not in REMOTE_SCHEMES:
        raise ManifestError(f"{where}.url: {url!r} is not one of {REMOTE_SCHEMES}")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ManifestError(f"{where}.size: expected bytes, got {size!r}")
    digests = {"md5": 32, "sha256": 64}
    for name, length in digests.items():
        value = entry.get(name)
        if value is not None and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", str(value)):
            raise ManifestError(f"{where}.{name}: {value!r} is not a hex digest")
    if entry.get("archive", "none") not in ARCHIVES:
        raise ManifestError(f"{where}.archive: expected one of {ARCHIVES}")
    return Part(
        name=entry["name"],
        file=entry["file"],
        url=None if url is None else str(url),
        size=size,
        md5=entry.get("md5"),
        sha256=entry.get("sha256"),
        archive=entry.get("archive", "none"),
    )


@dataclass(frozen=True)
class DownloadOptions:
    """The access policy and requests of a download (:class:`catalogs.remote_files.RemoteOptions`).

    Only the network part of the policy applies: a manifest names no local files.
    """

    allow_private_hosts: bool = False
    retries: int = 4
    concurrency: int = 4
    store_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    allow_local_files_from_remote: bool = False
    allowed_local_folders: tuple[str, ...] = ()
    sign: str | None = None
    sign_endpoint: str = ""

    def option_name(self, option: str) -> str:
        """The command-line option that sets ``option``."""
        return "--" + option.replace("_", "-")


@dataclass
class Outcome:
    """What a run did: parts downloaded, extracted, already in place, missing, failed."""

    downloaded: list[str] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)
    in_place: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def downloads_folder(root: Path) -> Path:
    """Where the parts of the dataset at ``root`` are downloaded: ``<root>.downloads``."""
    root = Path(root).absolute()
    return root.with_name(root.name + DOWNLOADS_SUFFIX)


def done_record(root: Path, part: Part) -> Path:
    """The file that records ``part`` as extracted."""
    return downloads_folder(root) / f"{part.file}.done"


def is_done(root: Path, part: Part) -> bool:
    """Whether ``part`` was extracted from a file of its size and checksum."""
    record = done_record(root, part)
    if not record.is_file():
        return False
    done = json.loads(record.read_text())
    return done.get("size") == part.size and done.get("checksum") == part.checksum


def placed_file(root: Path, part: Part) -> Path | None:
    """Where the user placed a guided part: ``<root>.downloads/<file>`` or ``<root>/<file>``."""
    for candidate in (downloads_folder(root) / part.file, root / part.file):
        if candidate.is_file():
            return candidate
    return None


def fetch_dataset(
    dataset: Dataset,
    root: Path,
    parts: Sequence[str] | None = None,
    options: DownloadOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Download (or find), verify and extract the selected parts of ``dataset`` into ``root``.

    Parts already recorded as extracted are left alone. Downloads run ``options.concurrency``
    at a time; each extraction runs once its file is verified.

    Args:
        dataset: the manifest's entry.
        root: the dataset's folder.
        parts: part names (None: all).
        options: the policy and requests.
        progress: told each change of the bytes on disk (a progress bar's ``update``).

    Returns:
        What was done; failures name the part and the reason.
    """
    options = options or DownloadOptions()
    outcome = Outcome()
    pending = []
    for part in dataset.selected(parts):
        (outcome.in_place if is_done(root, part) else pending).append(part)
    if not pending:
        return outcome
    root.mkdir(parents=True, exist_ok=True)
    downloads_folder(root).mkdir(parents=True, exist_ok=True)
    access = RemoteAccess(options)
    with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
        futures = {
            pool.submit(_obtain, part, root, access, options.retries, progress): part
            for part in pending
        }
        for future in as_completed(futures):
            part = futures[future]
            try:
                path, downloaded = future.result()
            except AssetError as error:
                outcome.failures[part.name] = f"{part.file}: {error.reason}"
                continue
            if path is None:
                outcome.missing.append(part.name)
                continue
            if downloaded:
                outcome.downloaded.append(part.name)
            try:
                extract(part, path, root)
            except ArchiveError as error:
                outcome.failures[part.name] = str(error)
                continue
            outcome.extracted.append(part.name)
    return outcome


def _obtain(
    part: Part,
    root: Path,
    access: RemoteAccess,
    retries: int,
    progress: Callable[[int], None] | None,
) -> tuple[Path | None, bool]:
    """The part's verified file (None: a guided part not placed yet) and whether it was fetched.

    Raises:
        AssetError: the download failed, or the file does not match its size or checksum.
    """
    if part.url is None:
        placed = placed_file(root, part)
        if placed is None:
            return None, False
        if problem := verification_problem(placed, _expected(part, placed)):
            raise AssetError(f"{placed}: {problem}")
        return placed, False
    entry = downloads_folder(root) / part.file
    present = entry.is_file()
    url = urlsplit(part.url)  # a query (mediaTUM's ?files=<name>) goes with every request
    remote = RemoteFile(unsigned(part.url), url.query, url.scheme.lower(), part.size, part.checksum)
    download(remote, entry, access, retries, progress)
    if present and verification_problem(entry, _expected(part, entry)):
        # A file left by an earlier run that is not this part (a changed manifest): again.
        entry.unlink()
        download(remote, entry, access, retries, progress)
    return entry, not present


def _expected(part: Part, path: Path) -> RemoteFile:
    """What the file ``path`` must be to be ``part`` (for :func:`verification_problem`)."""
    return RemoteFile(str(path), "", "file", part.size, part.checksum)


class ArchiveError(Exception):
    """A part's archive cannot be extracted; it was quarantined. The message says why."""


def extract(part: Part, path: Path, root: Path) -> None:
    """Extract ``part`` (its verified file ``path``) into ``root``, then record it as done.

    The members are extracted into a staging folder in the downloads folder and moved into
    ``root`` one file at a time (a rename each; a folder that exists is merged into).

    Raises:
        ArchiveError: naming the file and the reason (unreadable, or a member that would leave
            ``root``); the file is moved to the quarantine folder.
    """
    staging = downloads_folder(root) / f"{part.file}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _unpack(part, path, staging)
    except ArchiveError as error:
        shutil.rmtree(staging, ignore_errors=True)
        quarantine = downloads_folder(root) / QUARANTINE
        quarantine.mkdir(exist_ok=True)
        os.replace(path, quarantine / part.file)
        raise ArchiveError(f"{part.file}: {error} (moved to {quarantine})") from error
    _merge(staging, root)
    shutil.rmtree(staging)
    write_json(
        done_record(root, part),
        {"file": part.file, "size": part.size, "checksum": part.checksum, "extracted": True},
    )


def _unpack(part: Part, path: Path, staging: Path) -> None:
    if part.archive == "none":
        shutil.copyfile(path, staging / part.file)
        return
    try:
        if part.archive == "zip":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    member = PurePosixPath(name.replace("\\", "/"))
                    if member.is_absolute() or ".." in member.parts or ":" in name:
                        raise ArchiveError(f"member {name!r} would leave the dataset folder")
                archive.extractall(staging)
        else:
            with tarfile.open(path, "r:gz" if part.archive == "tar.gz" else "r:") as archive:
                archive.extractall(staging, filter="data")
    except tarfile.FilterError as error:
        raise ArchiveError(f"member refused: {error}") from error
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ArchiveError(f"cannot read the {part.archive} archive: {error}") from error


def _merge(staging: Path, root: Path) -> None:
    """Move every file under ``staging`` to the same place under ``root`` (renames)."""
    for folder, _, files in os.walk(staging):
        target = root / Path(folder).relative_to(staging)
        target.mkdir(exist_ok=True)
        for name in files:
            os.replace(Path(folder) / name, target / name)


def describe(dataset: Dataset, root: Path, parts: Sequence[str] | None = None) -> str:
    """What a run would fetch: each part, its size, where from, and whether it is in place."""
    lines = [
        f"{dataset.key}: {dataset.mode}, from {dataset.host} ({dataset.page}); "
        f"licence {dataset.licence}"
    ]
    total = left = 0
    unknown = False
    for part in dataset.selected(parts):
        done = is_done(root, part)
        size = part.size or 0
        unknown |= part.size is None
        total += size
        left += 0 if done else size
        state = "in place" if done else ("to download" if part.url else "to place by hand")
        lines.append(
            f"  {part.name:<24} {_human(part.size):>10}  {state:<16} {part.url or part.file}"
        )
    suffix = " (some sizes unpublished)" if unknown else ""
    lines.append(f"  {_human(total)} in all, {_human(left)} left to fetch{suffix}")
    if dataset.mode == "guided":
        lines.append(f"  by hand: {dataset.guide}")
    return "\n".join(lines)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m catalogs.download``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m catalogs.download",
        description=__doc__.split("\n\n")[0] + " The parts go to ROOT.downloads, their "
        "contents to ROOT in the publisher's layout, the STAC catalog to --out.",
        epilog="Datasets, hosts, sizes and licences: the README's table, or --list. Exit "
        "status 0 when every part is in place and the catalog is built, 1 when a part failed, "
        "2 when a guided part waits for you.",
    )
    parser.add_argument("dataset", help="the dataset (a key of the manifest, e.g. sen12ms)")
    parser.add_argument("--root", type=Path, required=True, help="the dataset's folder")
    parser.add_argument("--parts", nargs="+", help="only these parts (default: all)")
    parser.add_argument(
        "--list",
        action="store_true",
        help="print what would be fetched and its size; fetch nothing",
    )
    parser.add_argument("--out", type=Path, help="folder of the STAC catalog (default: ROOT.stac)")
    parser.add_argument("--no-build", action="store_true", help="do not build the catalog")
    parser.add_argument("--concurrency", type=int, default=4, help="downloads at once (4)")
    parser.add_argument("--retries", type=int, default=4, help="retries per request (4)")
    parser.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="allow requests to loopback, private or link-local hosts (a local mirror)",
    )
    parser.add_argument(
        "--manifest", type=Path, default=MANIFEST, help=f"the datasets' manifest ({MANIFEST.name})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        datasets = load_manifest(args.manifest)
    except (OSError, ManifestError, yaml.YAMLError) as error:
        parser.error(f"--manifest {args.manifest}: {error}")
    if args.dataset not in datasets:
        parser.error(f"unknown dataset {args.dataset!r}; known: {', '.join(sorted(datasets))}")
    dataset = datasets[args.dataset]
    try:
        selected = dataset.selected(args.parts)
    except ValueError as error:
        parser.error(str(error))
    if args.list:
        print(describe(dataset, args.root, args.parts))
        return 0
    if not dataset.parts:  # guided, nothing published to verify: build what the user placed
        folder = args.root / dataset.build_root
        if not (folder.is_dir() and any(folder.iterdir())):
            print(f"by hand: {dataset.guide}\n{folder} is empty or missing")
            return 2
        return _report(dataset, args, Outcome())
    options = DownloadOptions(
        allow_private_hosts=args.allow_private_hosts,
        retries=args.retries,
        concurrency=args.concurrency,
    )
    total = sum(part.size or 0 for part in selected if not is_done(args.root, part))
    with tqdm(
        total=total or None, unit="B", unit_scale=True, desc=dataset.key, disable=args.quiet
    ) as bar:
        lock = threading.Lock()  # the downloads' threads all advance one bar

        def advance(size: int) -> None:
            with lock:
                bar.update(size)

        outcome = fetch_dataset(dataset, args.root, args.parts, options, advance)
    return _report(dataset, args, outcome)


def _report(dataset: Dataset, args: argparse.Namespace, outcome: Outcome) -> int:
    for name, reason in sorted(outcome.failures.items()):
        print(f"failed {name}: {reason}", file=sys.stderr)
    print(
        f"{dataset.key}: {len(outcome.downloaded)} downloaded, {len(outcome.extracted)} "
        f"extracted, {len(outcome.in_place)} already in place, {len(outcome.failures)} failed, "
        f"{len(outcome.missing)} to place by hand"
    )
    if outcome.missing:
        files = [part.file for part in dataset.parts if part.name in outcome.missing]
        print(f"by hand: {dataset.guide}\nplace {', '.join(files)} in {args.root}")
        return 2 if not outcome.failures else 1
    if outcome.failures:
        return 1
    if args.no_build or dataset.source is None:
        return 0
    root = args.root.absolute()
    out = (args.out or root.with_name(root.name + CATALOG_SUFFIX)).absolute()
    stamp = catalog_stamp(dataset, root, out)
    record = catalog_record(root)
    if (
        stamp is not None
        and not outcome.extracted
        and (out / "catalog.json").is_file()
        and record.is_file()
        and json.loads(record.read_text()) == stamp
    ):
        print(f"{dataset.key}: catalog up to date -> {out / 'catalog.json'}")
        return 0
    status = _build(dataset, root, out)
    if status == 0 and stamp is not None:
        write_json(record, stamp)
    return status


def catalog_record(root: Path) -> Path:
    """The file that records from which extracted parts the catalog was last built."""
    return downloads_folder(root) / CATALOG_RECORD


def catalog_stamp(dataset: Dataset, root: Path, out: Path) -> dict[str, Any] | None:
    """What a catalog built now would be built from: the builder, its folders, the parts.

    The parts are those recorded as extracted (any run's, not only this run's selection: the
    builder reads the whole root). None for a dataset without parts (a guided one whose files
    the user placed as they are): nothing records what it holds, so its catalog is always built.
    A second run whose stamp equals the recorded one skips the build: on a real dataset
    (BigEarthNet's 590,326 patches) the build, not the check of the parts, is what takes time.
    """
    if not dataset.parts:
        return None
    done = [part for part in dataset.parts if is_done(root, part)]
    return {
        "source": dataset.source,
        "root": str(root / dataset.build_root),
        "out": str(out),
        "parts": [[part.file, part.size, part.checksum] for part in done],
    }


def _build(dataset: Dataset, root: Path, out: Path) -> int:
    from catalogs.build import main as build  # pystac and the builders only when building

    return build([dataset.source, "--root", str(root / dataset.build_root), "--out", str(out)])


if __name__ == "__main__":
    sys.exit(main())
