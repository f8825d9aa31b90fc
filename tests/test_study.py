"""Tests of model.study and model.study_report, with fake runs (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model import study as study_module
from model.study import Run, describe, load_config, plan, run_study
from model.study_report import write_reports

# mAP_micro of each (variant, seed): msgfm beats none by 0.1 in every seed; moe-cross0 ties
# with none in the paper and loses here.
SCORES = {
    "none": [0.5, 0.6, 0.7],
    "msgfm": [0.6, 0.7, 0.8],
    "moe-cross0": [0.4, 0.7, 0.6],
}


def config(tmp_path: Path) -> dict[str, Any]:
    task = {"task": "classification", "config": "c.yaml", "steps": 4, "seconds_per_step": 1.0}
    return {
        "name": "mini",
        "runs": str(tmp_path / "runs"),
        "reports": str(tmp_path / "reports"),
        "seeds": [0, 1, 2],
        "startup_s": 10,
        "pretrain": {
            "config": "p.yaml",
            "steps": 5,
            "seconds_per_step": 2.0,
            "overrides": {"trainer.callbacks": {"dirpath": "{folder}/checkpoints"}},
        },
        "variants": {
            "none": {"model.moe": False},
            "msgfm": {"model.moe": True, "model.cross_sensor_rate": 0.5},
            "moe-cross0": {"model.moe": True, "model.cross_sensor_rate": 0.0},
        },
        "finetune": {"overrides": {"model.missing_embeddings": "random"}, "tasks": {"ben": task}},
        "paper": {
            "ben": {
                "column": "BEN 10 % mAP",
                "higher_is_better": True,
                "values": {"none": 86.2, "msgfm": 87.5, "moe-cross0": 86.2},
            }
        },
        "comparisons": [
            {"name": "full vs none", "first": "msgfm", "second": "none"},
            {"name": "moe vs none", "first": "moe-cross0", "second": "none"},
        ],
    }


def fake_execute(run: Run) -> None:
    """Write what the real command would: a model card, or metrics from SCORES."""
    run.output.parent.mkdir(parents=True, exist_ok=True)
    if run.arguments[0] == "model.pretrain":
        card = {"properties": {"msgfm:training": {"steps": 5}}}
        run.output.write_text(json.dumps(card))
    else:
        variant, seed = run.folder.parts[-3], int(run.folder.name.removeprefix("seed"))
        metrics = {"metrics": {"mAP_micro": SCORES[variant][seed]}, "steps": 4}
        run.output.write_text(json.dumps(metrics))
    (run.folder / study_module.RECORD_FILE).write_text(json.dumps({"key": run.key}))


def test_the_plan_names_every_run_with_its_overrides(tmp_path: Path) -> None:
    study = plan(config(tmp_path))
    assert len(study.pretrains) == 3 and len(study.finetunes) == 9
    pretrain = study.pretrains["msgfm"].arguments
    assert pretrain[:3] == ("model.pretrain", "--config", "p.yaml")
    assert "--model.cross_sensor_rate" in pretrain and "0.5" in pretrain
    finetune = study.finetunes["msgfm", "ben", 2]
    assert finetune.folder == tmp_path / "runs/mini/finetune/msgfm/ben/seed2"
    flags = dict(zip(finetune.arguments[3::2], finetune.arguments[4::2], strict=True))
    assert flags["--seed_everything"] == "2" and flags["--data.init_args.seed"] == "2"
    assert flags["--model.missing_embeddings"] == "random"
    assert flags["--model.pretrained"] == str(tmp_path / "runs/mini/pretrain/msgfm/export")
    pretrain_folder = tmp_path / "runs/mini/pretrain/msgfm"
    assert f'{{"dirpath": "{pretrain_folder}/checkpoints"}}' in pretrain
    assert finetune.estimate_s == 14.0 and study.pretrains["none"].estimate_s == 20.0


def test_finished_runs_are_cached_and_a_change_reruns_what_it_affects(tmp_path: Path) -> None:
    document = config(tmp_path)
    assert run_study(plan(document), progress=lambda _: None, execute_run=fake_execute) == 12
    assert run_study(plan(document), progress=lambda _: None, execute_run=fake_execute) == 0
    assert "0.00 h left to run" in describe(plan(document))
    document["variants"]["msgfm"]["model.cross_sensor_rate"] = 1.0  # its pretrain + 3 fine-tunes
    changed = plan(document)
    pending = [run.name for run in changed.runs if not run.cached()]
    assert pending == ["pretrain msgfm", *[f"msgfm ben seed{s}" for s in range(3)]]
    document["finetune"]["tasks"]["ben"]["steps"] = 5  # every fine-tune, no pretraining
    assert sum(not run.cached() for run in plan(document).runs) == 9 + 1


def test_a_changed_config_file_or_source_reruns_what_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = config(tmp_path)
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text("model: {base_lr: 1.0e-3}\n")
    Path("c.yaml").write_text("trainer: {max_epochs: 8}\n")
    run_study(plan(document), progress=lambda _: None, execute_run=fake_execute)
    Path("c.yaml").write_text("trainer: {max_epochs: 9}\n")  # every fine-tune, no pretraining
    assert [run.name for run in plan(document).runs if not run.cached()] == [
        f"{variant} ben seed{seed}"
        for variant in ("none", "msgfm", "moe-cross0")
        for seed in range(3)
    ]
    Path("c.yaml").write_text("trainer: {max_epochs: 8}\n")
    assert not any(not run.cached() for run in plan(document).runs)
    monkeypatch.setattr(study_module, "code_digest", lambda: "other code")
    assert all(not run.cached() for run in plan(document).runs)


def test_the_code_digest_follows_the_sources_it_names(tmp_path: Path) -> None:
    (tmp_path / "model/nn").mkdir(parents=True)
    (tmp_path / "model/nn/a.py").write_text("x = 1\n")
    (tmp_path / "catalogs/sample").mkdir(parents=True)
    (tmp_path / "catalogs/sensors.yaml").write_text("s: 1\n")
    (tmp_path / "catalogs/sample/world.py").write_text("y = 1\n")
    (tmp_path / "model/study.py").write_text("z = 1\n")
    before = study_module.code_digest.__wrapped__(tmp_path)
    (tmp_path / "catalogs/sample/world.py").write_text("y = 2\n")  # the sample world: not read
    (tmp_path / "model/study.py").write_text("z = 2\n")  # the runner itself
    assert study_module.code_digest.__wrapped__(tmp_path) == before
    (tmp_path / "catalogs/sensors.yaml").write_text("s: 2\n")
    changed = study_module.code_digest.__wrapped__(tmp_path)
    (tmp_path / "model/nn/a.py").write_text("x = 2\n")
    assert len({before, changed, study_module.code_digest.__wrapped__(tmp_path)}) == 3


def test_a_run_without_its_output_is_redone(tmp_path: Path) -> None:
    study = plan(config(tmp_path))
    run_study(study, progress=lambda _: None, execute_run=fake_execute)
    study.finetunes["none", "ben", 1].output.unlink()  # interrupted: record but no output
    assert [run.name for run in study.runs if not run.cached()] == ["none ben seed1"]


def test_reports_compare_the_variants_and_are_written_once(tmp_path: Path) -> None:
    study = plan(config(tmp_path))
    run_study(study, progress=lambda _: None, execute_run=fake_execute)
    reports = tmp_path / "reports"
    written = write_reports(study)
    assert set(written) == {
        reports / f for f in ("ablation.json", "ablation/ben.png", "ablation.md")
    }
    document = json.loads((reports / "ablation.json").read_text())
    assert document["variants"]["msgfm"]["ben"] == pytest.approx(
        {"mAP_micro": 0.7, "mAP_micro_std": 0.1}
    )
    assert document["steps"] == {"pretrain": dict.fromkeys(SCORES, 5), "finetune": {"ben": 4}}
    full, moe = document["comparisons"]
    assert full["diff"] == pytest.approx(0.1) and full["ci95"] == pytest.approx([0.1, 0.1])
    assert full["paper_direction"] == "first_better" and full["paper_direction_holds"] is True
    assert moe["paper_direction"] == "tie" and moe["paper_direction_holds"] is None
    assert moe["diff"] == pytest.approx(-0.1 / 3)
    markdown = (reports / "ablation.md").read_text()
    assert "| msgfm | 0.7 ± 0.1 |" in markdown
    assert "BEN 10 % mAP: 87.5 vs 86.2" in markdown
    assert "Every direction the paper reports holds" in markdown
    # msgfm beats none by 0.1 in every seed: an interval of [0.1, 0.1]; moe-cross0's spans 0.
    assert "| +0.1 [+0.1, +0.1] | yes | BEN 10 % mAP: 87.5 vs 86.2 | yes |" in markdown
    assert (
        "Of 2 comparisons the paper's direction holds in 1 and fails in 0 (1 are ties in the "
        "paper); of the 1 whose interval excludes zero, 1 hold and 0 fail." in markdown
    )
    assert write_reports(study) == []  # nothing changed: nothing rewritten


def test_the_sample_study_config_plans_its_budget() -> None:
    document = load_config(Path("configs/study/ablation-sample.yaml"))
    assert len(document["comparisons"]) == 7 and len(document["paper"]) == 5
    study = plan(document)
    assert len(study.pretrains) == 7 and len(study.finetunes) == 7 * 5 * len(document["seeds"])
    assert len(document["seeds"]) >= 3
    assert sum(run.estimate_s for run in study.runs) <= 2.05 * 3600


def test_the_geopile2_study_plans_the_paper_s_runs() -> None:
    study = plan(load_config(Path("configs/study/ablation-geopile2.yaml")))
    assert len(study.pretrains) == 7 and len(study.finetunes) == 105
    flags = study.pretrains["s1-only"].arguments
    assert flags[flags.index("--trainer.max_epochs") + 1] == "800"
    assert flags[flags.index("--data.sensors") + 1] == '["sentinel1_grd"]'


def test_a_comparison_of_an_unknown_variant_is_refused(tmp_path: Path) -> None:
    document = config(tmp_path)
    document["comparisons"].append({"name": "x", "first": "msgfm", "second": "s9-only"})
    with pytest.raises(ValueError, match=r"study mini: .* unknown variants \['s9-only'\]"):
        plan(document)
    document["comparisons"].pop()
    document["finetune"]["tasks"]["ben"]["task"] = "bigearthnet"
    with pytest.raises(ValueError, match="task 'ben' names 'bigearthnet', not one of"):
        plan(document)
