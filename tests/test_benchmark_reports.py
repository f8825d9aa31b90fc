"""The downstream benchmark reports are strict JSON (an unmeasurable metric is null, a dash in
the table) and a failed write leaves the previous reports whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.evaluate import write_reports
from model.tasks.downstream import FIGURE_FILE

DETAILS = {
    "pansharpening": {
        "embeddings": {"worldview3_pan": "pretrained"},
        "train_samples": 4,
        "steps": 2,
    }
}


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_unmeasurable_metrics_are_null_and_a_failed_write_keeps_the_old_reports(
    tmp_path: Path,
) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    (runs / "pansharpening" / "pretrained").mkdir(parents=True)
    (runs / "pansharpening" / "pretrained" / FIGURE_FILE).write_bytes(b"picture")
    scores = {"PSNR": 21.5, "SSIM": 0.5, "SAM": 3.0, "ERGAS": 9.0}
    worse = {"PSNR": float("nan"), "SSIM": 0.25, "SAM": 4.0, "ERGAS": 10.0}
    results = {
        "pansharpening": {
            "random": worse,
            "bicubic": {**scores, "PSNR": float("inf")},
            "pretrained": scores,
        }
    }
    write_reports(results, DETAILS, runs, reports)
    written = _strict((reports / "benchmarks.json").read_text())
    assert written["pansharpening"]["random"]["PSNR"] is None
    assert written["pansharpening"]["bicubic"]["PSNR"] is None
    assert written["pansharpening"]["pretrained"] == scores
    table = (reports / "benchmarks.md").read_text()
    assert "| random init | – | 0.25 | 4 | 10 |" in table
    assert "| msGFM (ours, pretrained) | **21.5** |" in table
    assert (reports / "benchmarks" / "pansharpening.png").read_bytes() == b"picture"
    before = {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()}
    results["segmentation"] = {"pretrained": {"mIoU": 0.5, "OA": 0.7}}  # no picture of its run
    with pytest.raises(FileNotFoundError, match="segmentation"):
        write_reports(results, DETAILS, runs, reports)
    assert {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()} == before
