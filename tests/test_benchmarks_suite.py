"""``python -m pipeline.benchmarks``: a tiny run prints a table and, last, its JSON summary.

Figures are not asserted: performance is read from the command, never from tests.
``python -m pipeline bench`` is the same command.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.__main__ import main as stage_command
from pipeline.benchmarks.__main__ import main
from pipeline.benchmarks.suite import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_ends_with_a_json_line_of_positive_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--quick", "--bench-dir", str(tmp_path), "--params", str(REPO / "params.yaml")]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert tuple(summary) == SUMMARY_KEYS
    assert all(isinstance(value, float) and value > 0 for value in summary.values()), summary
    assert any(line.startswith("naive per-chip script") for line in lines)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_stage_command_forwards_bench_to_the_benchmarks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        stage_command(["bench", "--scenes", "0"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python -m pipeline.benchmarks")
    assert "--scenes, --scale and --repeats must be at least 1" in error
