"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every writer of a file that the README calls atomic (work files, reports, figures, catalogs,
model cards, metrics) goes through this module: the content is written to a temporary name in
the target's folder, flushed and fsynced, then renamed onto the target (``os.replace`` is atomic
within one filesystem); on any error the temporary file is removed and the target is untouched.
It lives in catalogs/ (the lowest layer) so that pipeline/ and model/ share it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed onto it once the block ends without error.

    For a library that writes a file itself (a figure's ``savefig``, ``to_parquet``). The
    temporary name keeps ``target``'s suffix, so writers that choose a format by suffix
    choose the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
    )
    os.close(handle)
    path = Path(temporary)
    try:
        yield path
        replace_file(path, target)
    finally:
        path.unlink(missing_ok=True)


def replace_file(new: Path, target: Path) -> None:
    """Rename the written file ``new`` onto ``target`` durably (both in one folder).

    Args:
        new: the complete file, under a temporary name.
        target: the file it replaces (or creates).
    """
    fsync_path(new)
    os.replace(new, target)
    fsync_path(target.parent)


@contextmanager
def atomic_open(target: Path | str, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """An open file that replaces ``target`` once closed without error.

    ``mode`` is ``"w"``, ``"wb"`` ...
    """
    with atomic_path(target) as path, open(path, mode, **kwargs) as f:
        yield f


def save_figure(figure: Any, target: Path | str, dpi: int = 80) -> Path:
    """Save a matplotlib ``figure`` to ``target`` atomically, then close it.

    The format comes from ``target``'s suffix, which the temporary name keeps. The figure is
    closed whether or not the save succeeded.
    """
    from matplotlib import pyplot as plt  # only writers of figures pay for pyplot

    try:
        with atomic_path(target) as path:
            figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)
    return Path(target)


def write_bytes(target: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target`` as a Path."""
    with atomic_open(target, "wb") as f:
        f.write(data)
    return Path(target)


def write_text(target: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; returns ``target`` as a Path."""
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: Path | str, document: Any, indent: int | None = 2) -> Path:
    """Write ``document`` as strict JSON (RFC 8259: no NaN or Infinity) atomically.

    Raises:
        ValueError: naming ``target`` and the first non-finite number's place (e.g.
            ``$.qa.median_shift_px``); use :func:`finite_or_none` for values that may be
            unmeasurable, so they become ``null``.
    """
    where = _first_non_finite(document, "$")
    if where is not None:
        raise ValueError(
            f"{target}: {where} is not a finite number; JSON has no NaN or "
            "Infinity (write null for a value that cannot be measured)"
        )
    text = json.dumps(document, indent=indent, allow_nan=False)
    return write_text(target, text + "\n")


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None where it is missing, NaN or infinite (JSON's null)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@contextmanager
def atomic_folder(target: Path | str, durable: bool = True) -> Iterator[Path]:
    """A staging folder beside ``target`` that replaces it whole once the block ends.

    On an error in the block the staging folder is removed and ``target`` (a folder or
    nothing) is left as it was. Otherwise the files are fsynced (unless ``durable`` is False)
    and the staging folder takes ``target``'s place (:func:`replace_folder`). The staging
    folder is made by :func:`tempfile.mkdtemp` (mode 0o700); a caller that wants another mode
    sets it inside the block.

    Args:
        target: the folder to write.
        durable: fsync every file before the rename. A cache of tens of thousands of files that
            is only rendered again when lost passes False: fsync costs milliseconds a file.

    Yields:
        The staging folder to fill.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        for path in sorted(staging.rglob("*")) if durable else ():
            if path.is_file():
                fsync_path(path)
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(new: Path, target: Path, retired: Path | None = None) -> None:
    """Rename the folder ``new`` to ``target``, replacing the folder there, if any.

    The swap is two renames (the old folder aside to ``retired``, the new one in place), so a
    crash between them leaves no ``target`` but never a half-written one; the old folder is
    then deleted.

    Args:
        new: the complete folder, on the filesystem of ``target``.
        target: the folder it replaces (or creates).
        retired: where the old folder goes before it is deleted; it must not exist. Default:
            ``new``'s name plus ``.old``, beside ``new``.
    """
    retired = retired if retired is not None else new.with_name(f"{new.name}.old")
    if target.exists():
        os.replace(target, retired)
    os.replace(new, target)
    fsync_path(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


def _first_non_finite(value: Any, where: str) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_finite(item, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_non_finite(item, f"{where}[{index}]")
            if found:
                return found
    return None


def fsync_path(path: Path) -> None:
    """Fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
