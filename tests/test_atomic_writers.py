"""Every file the README calls atomic survives a write that fails halfway: the reader keeps
the old file whole, and no temporary file is left behind.

The failure is a real one from the kernel: the writer runs in a forked child whose file size
limit (RLIMIT_FSIZE) is below the size of what it writes, so its ``write`` fails with EFBIG
partway through, as it would on a full disk.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from catalogs.build import build_catalog
from pipeline.failures import Failure, write_failures
from pipeline.items import read_items, write_items
from pipeline.params import load_params
from pipeline.stages import _summarise_chips
from pipeline.validate import run_validate
from tests.pipeline_setup import PARAMS, REPORTS, WORK, Build, busy_reference


def _fails_with_small_files(write: Callable[[], object], limit_bytes: int) -> bool:
    """Run ``write`` in a forked child that may not write past ``limit_bytes`` of any file;
    whether it raised (the limit's EFBIG, not a signal)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
            write()
        except OSError:
            code = 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 1), f"child status {status}"
    return os.WEXITSTATUS(status) == 1


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _assert_untouched_after_a_failed_write(folder: Path, write: Callable[[], object]) -> None:
    before = _snapshot(folder)
    limit = min(len(data) for data in before.values()) // 2
    assert _fails_with_small_files(write, limit), "the write did not fail"
    assert _snapshot(folder) == before


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Build:
    return busy_reference(tmp_path_factory, sample_world)


@pytest.fixture
def workspace(built: Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a finished build to write over (the sample world stays a link)."""
    folder = tmp_path / "build"
    shutil.copytree(built.folder, folder, symlinks=True)
    monkeypatch.chdir(folder)
    return folder


def test_the_build_reports_and_figures_are_replaced_whole_or_not_at_all(workspace: Path):
    params = load_params(PARAMS)
    _assert_untouched_after_a_failed_write(workspace / REPORTS, lambda: run_validate(params))


def test_the_coregister_summary_and_qa_table_are_replaced_whole_or_not_at_all(workspace: Path):
    params = load_params(PARAMS)
    summary = {p: p.read_bytes() for p in (workspace / WORK).glob("*.*") if p.is_file()}
    chip_files = sorted(params.chips_dir.rglob("*.npz"))
    assert _fails_with_small_files(lambda: _summarise_chips(params, chip_files), 64)
    assert {p: p.read_bytes() for p in summary} == summary
    assert sorted((workspace / WORK).glob(".*")) == []


def test_the_items_table_and_failures_are_replaced_whole_or_not_at_all(workspace: Path):
    params = load_params(PARAMS)
    items = read_items(params.items_table)
    folder = workspace / "tables"
    folder.mkdir()
    write_items(folder / "items.parquet", items[:1])
    write_failures(folder / "failures.json", [Failure("fetch", "a", None, "missing file")])
    failures = [Failure("fetch", f"item-{i}", None, "missing file") for i in range(200)]
    _assert_untouched_after_a_failed_write(
        folder, lambda: write_items(folder / "items.parquet", items)
    )
    _assert_untouched_after_a_failed_write(
        folder, lambda: write_failures(folder / "failures.json", failures)
    )


def test_a_static_catalog_is_replaced_whole_or_not_at_all(sample_world: Path, tmp_path: Path):
    out = tmp_path / "catalog"
    roots = {"millionaid": sample_world / "raw" / "millionaid"}
    build_catalog(roots, out)
    _assert_untouched_after_a_failed_write(out, lambda: build_catalog(roots, out))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} in strict JSON")


def test_unmeasurable_shifts_are_null_in_strict_json_metrics(workspace: Path):
    """A QA table whose every shift is NaN or infinite still gives RFC 8259 metrics."""
    qa = workspace / WORK / "qa.csv"
    lines = qa.read_text().splitlines()
    column = lines[0].split(",").index("shift_px")
    rows = [line.split(",") for line in lines[1:]]
    for number, row in enumerate(rows):
        row[column] = ("nan", "inf")[number % 2]
    qa.write_text("\n".join([lines[0], *(",".join(row) for row in rows)]) + "\n")
    report = run_validate(load_params(PARAMS))
    metrics = json.loads(report.read_text(), parse_constant=_no_constants)
    assert metrics["qa_shift"]["pairs_measured"] == 0
    assert metrics["qa_shift"]["pairs_without_structure"] == len(rows) > 0
    assert metrics["qa_shift"]["p50_px"] is None and metrics["qa_shift"]["max_px"] is None
