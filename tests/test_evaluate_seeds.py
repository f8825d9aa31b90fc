"""``python -m model.evaluate --seeds N``: per-seed runs, mean ± std and the paired interval,
on fake fine-tunes (each writes a metrics.json) instead of training."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from model import evaluate as evaluate_module
from model.evaluate import COMPARISON, aggregate, evaluate
from model.tasks.downstream import FIGURE_FILE, METRICS_FILE

# segmentation mIoU of each (init, seed): pretrained is 0.1 better in every seed.
MIOU = {"pretrained": [0.5, 0.6, 0.7], "random": [0.4, 0.5, 0.6]}


def fake_finetune(
    config: Path, pretrained: Path, init: str, out_dir: Path, log: Path, overrides: Sequence[str]
) -> None:
    seed = int(overrides[overrides.index("--data.init_args.seed") + 1]) if overrides else 0
    assert overrides in ([], ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)])
    out_dir.mkdir(parents=True)
    record = {
        "metrics": {"mIoU": MIOU[init][seed], "OA": 0.9},
        "embeddings": {},
        "train_samples": 8,
        "steps": 4,
    }
    (out_dir / METRICS_FILE).write_text(json.dumps(record))
    (out_dir / FIGURE_FILE).write_bytes(f"picture {init} {seed}".encode())


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = evaluate_module.TASKS["segmentation"]
    baselines = {"majority": {"mIoU": 0.2, "OA": 0.5}}
    monkeypatch.setitem(
        evaluate_module.TASKS,
        "segmentation",
        dataclasses.replace(spec, baselines=lambda _: baselines),
    )
    monkeypatch.setattr(evaluate_module, "finetune", fake_finetune)
    monkeypatch.setattr(evaluate_module, "data_module", lambda config: None)


@pytest.mark.usefixtures("fake_runs")
def test_seeds_give_mean_std_and_the_paired_interval(tmp_path: Path) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    results = evaluate(Path("export"), Path("configs"), runs, reports, ["segmentation"], seeds=3)
    assert (runs / "segmentation" / "random" / "seed2" / METRICS_FILE).is_file()
    written = json.loads((reports / "benchmarks.json").read_text())
    assert written == results
    rows = written["segmentation"]
    assert rows["pretrained"] == pytest.approx(
        {"mIoU": 0.6, "mIoU_std": 0.1, "OA": 0.9, "OA_std": 0.0}
    )
    assert rows["majority"] == {"mIoU": 0.2, "OA": 0.5}  # scored once: no std
    comparison = rows[COMPARISON]
    assert comparison["metric"] == "mIoU" and comparison["seeds"] == 3
    assert comparison["diff"] == pytest.approx(0.1)
    assert comparison["ci95"] == pytest.approx([0.1, 0.1])
    assert (reports / "benchmarks" / "segmentation.png").read_bytes() == b"picture pretrained 0"
    table = (reports / "benchmarks.md").read_text()
    assert "| msGFM (ours, pretrained) | **0.6** ± 0.1 | **0.9** ± 0 |" in table
    assert "excludes zero, on 1 of 1 tasks (segmentation)" in table


@pytest.mark.usefixtures("fake_runs")
def test_one_seed_keeps_the_paths_and_the_shape(tmp_path: Path) -> None:
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    evaluate(Path("export"), Path("configs"), runs, reports, ["segmentation"])
    assert (runs / "segmentation" / "pretrained" / METRICS_FILE).is_file()
    written = json.loads((reports / "benchmarks.json").read_text())
    assert written == {
        "segmentation": {
            "pretrained": {"mIoU": 0.5, "OA": 0.9},
            "random": {"mIoU": 0.4, "OA": 0.9},
            "majority": {"mIoU": 0.2, "OA": 0.5},
        }
    }
    assert "on the main metric of 1 of 1 tasks" in (reports / "benchmarks.md").read_text()


def test_an_interval_across_zero_is_not_a_win() -> None:
    runs = {
        "pretrained": {0: {"PSNR": 21.0}, 1: {"PSNR": 20.0}, 2: {"PSNR": 21.0}},
        "random": {0: {"PSNR": 20.0}, 1: {"PSNR": 21.0}, 2: {"PSNR": float("nan")}},
    }
    rows = aggregate("pansharpening", runs)
    assert rows["random"] == {"PSNR": 20.5, "PSNR_std": pytest.approx(0.5**0.5)}
    assert rows[COMPARISON]["seeds"] == 2  # seed 2 is unmeasurable for random
    assert rows[COMPARISON]["diff"] == 0.0
    assert rows[COMPARISON]["ci95"] == [-1.0, 1.0]
