"""``python -m model.pretrain``: a short run writes its checkpoint, logs, figures and export, a
run resumed mid-epoch repeats the uninterrupted one, and a checkpoint holding pickled code is
refused (local or served over HTTP) before the code runs."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from model import load_pretrained
from model.nn.msgfm import Reconstruction
from model.pretrain import main
from model.tasks.pretraining import (
    optimizer_steps_per_epoch,
    reconstruction_panels,
    warmup_steps,
)
from tests.http_server import file_server
from tests.pipeline_setup import busy_reference

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "pretrain" / "tiny-sample.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, sample_world: Path) -> Path:
    return busy_reference(tmp_path_factory, sample_world).store


def config(
    folder: Path, store: Path, steps: int, checkpoint_every: int = 0, figures_every: int = 0
) -> Path:
    """The tiny-sample config on a 64 px store, writing under ``folder``."""
    settings = yaml.safe_load(TINY.read_text())
    trainer = settings["trainer"]
    trainer.update(
        max_steps=steps,
        log_every_n_steps=1,
        default_root_dir=str(folder),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer["logger"] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(folder), "name": "logs", "version": ""},
        }
    ]
    trainer["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(folder / "checkpoints"),
                "every_n_train_steps": checkpoint_every or steps,
                "save_top_k": -1,
            },
        }
    ]
    settings["model"].update(
        window_size=2, figure_every_n_steps=figures_every, export_dir=str(folder / "export")
    )
    settings["data"].update(root=str(store), crop_px=64, batch_size=8)
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


def step_losses(folder: Path) -> dict[int, float]:
    with open(folder / "logs" / "metrics.csv") as f:
        return {
            int(row["step"]): float(row["train/loss"])
            for row in csv.DictReader(f)
            if row.get("train/loss")
        }


def test_a_short_run_writes_checkpoint_logs_figures_and_export(store: Path, tmp_path: Path) -> None:
    assert main(["--config", str(config(tmp_path, store, steps=3, figures_every=2))]) == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch=0-step=3.ckpt"]
    losses = step_losses(tmp_path)
    assert sorted(losses) == [0, 1, 2] and all(0 < v < 10 for v in losses.values())
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    for column in (
        "train/mim_sentinel2_l2a",
        "train/aux",
        "train/cross_share",
        "moe/max_expert_load",
        "moe/dropped_fraction",
    ):
        assert column in header
    figures = {p.name for p in (tmp_path / "logs" / "figures").iterdir()}
    assert "step0000000_sentinel2_l2a_to_sentinel2_l2a.png" in figures
    assert any(name.endswith("_to_sentinel1_grd.png") for name in figures)
    pairs = (("dsm", "rgb"), ("sentinel1_grd", "sentinel2_l2a"))  # the end: each sensor and pair
    assert {name for name in figures if name.startswith("step0000003_")} == {
        f"step0000003_{a}_to_{b}.png" for pair in pairs for a in pair for b in pair
    }
    state = torch.load(tmp_path / "checkpoints" / "epoch=0-step=3.ckpt", weights_only=True)
    assert state["hyper_parameters"]["store"] == str(store)  # loads with weights_only=True
    encoder = load_pretrained(tmp_path / "export")
    features = encoder("sentinel2_l2a", torch.randn(1, 12, 64, 64))
    assert features.shape == (1, 256, 2, 2) and (tmp_path / "logs" / "config.yaml").exists()


def test_a_run_resumed_mid_epoch_repeats_the_uninterrupted_run(store: Path, tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    main(["--config", str(config(whole, store, steps=4, checkpoint_every=2))])
    checkpoint = whole / "checkpoints" / "epoch=0-step=2.ckpt"  # as if it had stopped there
    main(["--config", str(config(resumed, store, steps=4)), "--ckpt_path", str(checkpoint)])
    expected, again = step_losses(whole), step_losses(resumed)
    assert sorted(again) == [2, 3]
    for step in (2, 3):
        assert again[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_a_rerun_with_the_same_seed_writes_a_byte_identical_export(
    store: Path, tmp_path: Path
) -> None:
    """The export holds no clock time nor run folder, so DVC finds a rerun's export unchanged
    and skips the fine-tuning stage after it."""
    exports = []
    for _ in range(2):  # the same command again, as `dvc repro --force pretrain` runs it
        main(["--config", str(config(tmp_path, store, steps=2))])
        exports.append({f.name: f.read_bytes() for f in sorted((tmp_path / "export").iterdir())})
    assert sorted(exports[0]) == ["encoder.safetensors", "model_card.json"]
    assert exports[0] == exports[1]


def test_ddp_on_two_cpu_processes_keeps_the_ranks_weights_equal(
    store: Path, tmp_path: Path
) -> None:
    script = Path(__file__).with_name("ddp_pretrain.py")
    done = subprocess.run(
        [sys.executable, str(script), str(config(tmp_path, store, steps=2)), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, weight in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][key], weight, rtol=0, atol=0)
    first, second = (set(map(tuple, rank["chips"])) for rank in ranks)
    assert first and second and not first & second  # each rank trained on its own chips
    # Rank 0 exports the trained encoder, gathered through the strategy (as FSDP needs).
    exported = load_pretrained(tmp_path / "export").encoder.state_dict()
    for key, weight in exported.items():
        torch.testing.assert_close(
            weight, ranks[0]["weights"][f"network.encoder.{key}"], rtol=0, atol=0
        )


class _MakesFolderWhenUnpickled:
    """Pickles as a call of ``os.mkdir(marker)``: the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("served", [False, True], ids=["local", "http"])
def test_a_checkpoint_holding_pickled_code_is_refused_before_the_code_runs(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: bool
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # where a URL is downloaded to
    marker = tmp_path / "payload-ran"
    hostile = tmp_path / "served" / "hostile.ckpt"
    hostile.parent.mkdir()
    torch.save({"state_dict": {}, "payload": _MakesFolderWhenUnpickled(marker)}, hostile)
    with file_server(hostile.parent) as server:
        checkpoint = server.url(hostile.name) if served else str(hostile)
        with pytest.raises(ValueError, match=re.escape(checkpoint) + ": refused by a weights"):
            main(
                [
                    "--config",
                    str(config(tmp_path / "run", store, steps=1)),
                    "--ckpt_path",
                    checkpoint,
                ]
            )
        assert {r.path for r in server.requests} == ({"/hostile.ckpt"} if served else set())
    assert not marker.exists()


def test_warmup_in_epochs_wins_over_the_share_and_must_fit_the_run() -> None:
    assert warmup_steps(1000, 0.1) == 100
    assert warmup_steps(1000, 0.1, warmup_epochs=10, steps_per_epoch=8) == 80
    assert warmup_steps(1000, 0.1, warmup_epochs=0.5, steps_per_epoch=7) == 4  # round(3.5)
    assert warmup_steps(80, 0.1, warmup_epochs=10, steps_per_epoch=8) == 80  # all of it
    with pytest.raises(ValueError, match=r"warmup_epochs 11 is 88 steps \(8 per epoch\), more"):
        warmup_steps(80, 0.1, warmup_epochs=11, steps_per_epoch=8)
    with pytest.raises(ValueError, match="warmup_epochs -1 needs to be non-negative"):
        warmup_steps(80, 0.1, warmup_epochs=-1, steps_per_epoch=8)


def test_steps_per_epoch_count_optimiser_steps_of_the_train_loader() -> None:
    trainer = SimpleNamespace(num_training_batches=10, accumulate_grad_batches=4)
    assert optimizer_steps_per_epoch(trainer) == 3  # the last, short accumulation steps too
    trainer = SimpleNamespace(num_training_batches=float("inf"), accumulate_grad_batches=1)
    with pytest.raises(ValueError, match="warmup_epochs needs a train loader with a length"):
        optimizer_steps_per_epoch(trainer)


RGB = SimpleNamespace(name="rgb", kind="optical", band_names=("red", "green", "blue"))


def _group(prediction: torch.Tensor, target: torch.Tensor) -> Reconstruction:
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, 1:3] = True  # 4 of 16 tokens (8 px each) masked
    rows = torch.tensor([0])
    return Reconstruction("rgb", "rgb", rows, target, mask, prediction, target)


def test_the_reconstruction_panel_shows_what_the_loss_sees() -> None:
    target = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    visible = torch.ones(32, 32, dtype=torch.bool)
    visible[:16, 8:24] = False
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    panels = reconstruction_panels(_group(noise, target), {"rgb": RGB}, 0)
    reconstruction, truth = panels[2], panels[3]
    np.testing.assert_array_equal(reconstruction[visible.numpy()], truth[visible.numpy()])
    assert not np.array_equal(reconstruction, truth)
    same = reconstruction_panels(_group(target.clone(), target), {"rgb": RGB}, 0)
    np.testing.assert_array_equal(same[2], same[3])
    # A prediction of the band mean (0 normalised) is drawn with the target's stretch: the
    # middle of its 2-98 % range, not stretched to black or to full contrast.
    flat = reconstruction_panels(_group(torch.zeros_like(target), target), {"rgb": RGB}, 0)[2]
    masked = flat[~visible.numpy()]
    assert np.ptp(masked, axis=0).max() == 0.0 and 0.3 < masked.mean() < 0.7
