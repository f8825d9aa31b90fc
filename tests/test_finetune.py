"""Fine-tuning: each task runs end to end from its sample config on small sets (two steps),
pretrained or at random init; bad checkpoints and inputs give errors that say what is missing;
the evaluate command writes the Table-3 report."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from catalogs.sample.benchmark import render_downstream_sets
from catalogs.sample.downstream import DownstreamSizes, scene_triplets
from catalogs.store_format import SensorManifest, read_manifest
from model import load_pretrained
from model.evaluate import config_path, evaluate
from model.export import export_pretrained
from model.finetune import main
from model.finetuned import load_finetuned
from model.nn.downstream import DownstreamNetwork, MissingEmbeddingError
from model.nn.encoder import encoder_config
from model.nn.msgfm import MsGFM
from model.tasks import TASKS
from model.tasks.downstream import FIGURE_FILE, METRICS_FILE
from tests.pipeline_setup import busy_reference

# One worker runs this module, so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("finetune")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune"
INPUT_PX = 192  # the configs' size (SpaceNet 2's 163 px MS grid must fit)
SETS = {
    "classification": "bigearthnet",
    "cloud_removal": "sen12ms-cr",
    "pansharpening": "spacenet2",
    "segmentation": "vaihingen",
}
SIZES = DownstreamSizes(
    bigearthnet_patches={"train": 3, "val": 1, "test": 2},
    sen12ms_cr_triplets=scene_triplets(
        {("ROIs1158_spring", 11): 2, ("ROIs2017_winter", 22): 1, ("ROIs1158_spring", 106): 2}
    ),
    spacenet2_images=(1, 2, 8, 9),
    vaihingen_areas=(1, 2),
)
EXPECTED_METRICS = {
    "classification": {"mAP_micro", "mAP_macro"},
    "cloud_removal": {"MAE", "RMSE", "PSNR", "SAM", "SSIM", "checkerboard_ratio"},
    "pansharpening": {"MAE", "RMSE", "PSNR", "SAM", "SSIM", "ERGAS", "checkerboard_ratio"},
    "segmentation": {"mIoU", "OA"},
}
EXPECTED_EMBEDDINGS = {
    "classification": {"sentinel2_l2a": "pretrained", "sentinel1_grd": "pretrained"},
    "cloud_removal": {
        "sentinel2_l1c": "wavelength-matched from sentinel2_l2a",
        "sentinel1_grd": "pretrained",
    },
    "pansharpening": {
        "worldview3_ms": "wavelength-matched from sentinel2_l2a",
        "worldview3_pan": "wavelength-matched from rgb",
    },
    "segmentation": {"cir": "wavelength-matched from sentinel2_l2a", "dsm": "pretrained"},
}


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small versions of the four benchmark sets, in their official layouts."""
    return render_downstream_sets(tmp_path_factory.mktemp("downstream") / "sets", sizes=SIZES)


@pytest.fixture(scope="module")
def sensors(
    tmp_path_factory: pytest.TempPathFactory, sample_world: Path
) -> dict[str, SensorManifest]:
    """The pretraining sensors (S2 L2A, S1, RGB, DSM) with their store statistics."""
    return read_manifest(busy_reference(tmp_path_factory, sample_world).store).sensors


def export_of(folder: Path, sensors: dict[str, SensorManifest], **config: object) -> Path:
    """A tiny msGFM over ``sensors`` at 192 px, exported."""
    torch.manual_seed(0)
    channels = {name: len(m.band_names) for name, m in sensors.items()}
    network = MsGFM(channels, encoder_config("tiny", input_px=INPUT_PX, **config))
    return export_pretrained(network, folder, sensors, training={"steps": 0})


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, sensors: dict[str, SensorManifest]) -> Path:
    return export_of(tmp_path_factory.mktemp("export") / "msgfm", sensors)


def run(task: str, sets: Path, export: Path, out: Path, *extra: str) -> dict:
    """Two training steps and the test split of ``task``'s sample config; its metrics.json."""
    main(
        [
            "--config",
            str(config_path(CONFIGS, task)),
            "--data.root",
            str(sets / SETS[task]),
            "--data.input_px",
            str(INPUT_PX),
            "--data.batch_size",
            "2",
            "--model.pretrained",
            str(export),
            "--model.out_dir",
            str(out),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.max_steps",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
            *extra,
        ]
    )
    return json.loads((out / METRICS_FILE).read_text())


@pytest.mark.parametrize("task", TASKS)
def test_each_task_fine_tunes_and_scores_the_test_split(
    task: str, sets: Path, export: Path, tmp_path: Path
) -> None:
    record = run(task, sets, export, tmp_path)
    assert set(record["metrics"]) >= EXPECTED_METRICS[task]
    assert all(value == value for value in record["metrics"].values())  # no NaN
    assert record["init"] == "pretrained" and record["steps"] == 2
    # Sensors the model never saw get embeddings matched by wavelength to a pretrained one.
    assert record["embeddings"] == EXPECTED_EMBEDDINGS[task]
    assert (tmp_path / FIGURE_FILE).stat().st_size > 0
    model = load_finetuned(tmp_path)  # the run leaves its model in out_dir/model
    assert (
        model.name == task and model.card["properties"]["msgfm:embeddings"] == record["embeddings"]
    )


def test_a_picture_write_that_fails_leaves_the_previous_picture_whole(
    sets: Path, export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / FIGURE_FILE).write_bytes(b"the previous run's picture")

    def disk_full(figure: Figure, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"\x89PNG half a pic")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Figure, "savefig", disk_full)
    with pytest.raises(OSError, match="No space left"):  # no training: the test split only
        run("classification", sets, export, tmp_path, "--trainer.max_steps", "0")
    assert (tmp_path / FIGURE_FILE).read_bytes() == b"the previous run's picture"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    record = json.loads(
        (tmp_path / METRICS_FILE).read_text(), parse_constant=lambda constant: pytest.fail(constant)
    )
    assert set(record["metrics"]) == EXPECTED_METRICS["classification"]


def test_pretrained_init_loads_the_export_and_random_init_does_not(
    sets: Path, export: Path, tmp_path: Path
) -> None:
    pretrained = load_pretrained(export)
    channels = {"sentinel2_l2a": 12, "sentinel1_grd": 2}
    network = DownstreamNetwork(pretrained.encoder.config, channels, "classification", 19)
    random_state = {k: v.clone() for k, v in network.encoder.state_dict().items()}
    network.load_pretrained(pretrained)
    for key, value in pretrained.encoder.state_dict().items():
        torch.testing.assert_close(network.encoder.state_dict()[key], value, rtol=0, atol=0)
    assert any(
        not torch.equal(random_state[k], v) for k, v in pretrained.encoder.state_dict().items()
    )
    assert network.provenance == {"sentinel2_l2a": "pretrained", "sentinel1_grd": "pretrained"}
    record = run(
        "classification",
        sets,
        export,
        tmp_path,
        "--model.init",
        "random",
        "--model.drop_path_rate",
        "0.3",
    )
    assert record["init"] == "random"
    assert record["embeddings"] == {"sentinel2_l2a": "random", "sentinel1_grd": "random"}
    # The fine-tuning drop path rate replaces the export's (0 in the tiny preset), linear
    # from 0 at the first block to 0.3 at the last, and the fine-tuned model keeps it.
    encoder = load_finetuned(tmp_path).task.network.encoder
    assert encoder.config.drop_path_rate == 0.3
    blocks = [block for stage in encoder.stages for block in stage.blocks]
    assert isinstance(blocks[0].drop_path1, torch.nn.Identity)
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert blocks[-2].drop_path2.drop_prob == pytest.approx(0.3 * 8 / 9)


def test_a_checkpoint_without_a_sensors_embedding_names_it(
    sets: Path, sensors: dict[str, SensorManifest], tmp_path: Path
) -> None:
    optical_only = {k: v for k, v in sensors.items() if k != "sentinel1_grd"}
    export = export_of(tmp_path / "no-sar", optical_only)
    with pytest.raises(MissingEmbeddingError, match=r"no patch embedding for 'sentinel1_grd'"):
        run("classification", sets, export, tmp_path / "run")


def test_a_missing_embedding_keeps_its_random_init_when_asked(
    sensors: dict[str, SensorManifest], tmp_path: Path
) -> None:
    optical_only = {k: v for k, v in sensors.items() if k != "sentinel1_grd"}
    pretrained = load_pretrained(export_of(tmp_path / "no-sar", optical_only))
    channels = {"sentinel2_l2a": 12, "sentinel1_grd": 2}
    network = DownstreamNetwork(pretrained.encoder.config, channels, "classification", 19)
    random_init = {
        k: v.clone() for k, v in network.embeddings["sentinel1_grd"].state_dict().items()
    }
    with pytest.raises(MissingEmbeddingError, match=r"no patch embedding for 'sentinel1_grd'"):
        network.load_pretrained(pretrained)  # "error" by default
    network.load_pretrained(pretrained, missing="random")
    assert network.provenance == {
        "sentinel2_l2a": "pretrained",
        "sentinel1_grd": "random (not in the pretrained model)",
    }
    for key, value in network.embeddings["sentinel1_grd"].state_dict().items():
        assert torch.equal(value, random_init[key])
    for key, value in pretrained.encoder.state_dict().items():
        assert torch.equal(network.encoder.state_dict()[key], value)


def test_a_checkpoint_of_another_architecture_names_the_differences(
    sensors: dict[str, SensorManifest], tmp_path: Path
) -> None:
    other = load_pretrained(export_of(tmp_path / "dense", sensors, moe=None))
    ours = encoder_config("tiny", input_px=INPUT_PX)
    network = DownstreamNetwork(ours, {"dsm": 1}, "dense", 6)
    with pytest.raises(ValueError, match="another architecture") as error:
        network.load_pretrained(other)
    assert ".mlp.w1" in str(error.value) and ".mlp.fc1.weight" in str(error.value)


def test_a_config_asking_for_bands_the_dataset_lacks_names_them(
    sets: Path, export: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="'rgb'.*sentinel2_l2a"):
        run("classification", sets, export, tmp_path, "--data.sensors", "[rgb]")


def test_evaluate_writes_the_table_with_both_inits_and_the_baselines(
    sets: Path, export: Path, tmp_path: Path
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    tasks = ("pansharpening", "segmentation")  # the other two run above; dvc repro runs all
    for task in tasks:  # the sample configs, pointed at the small sets, two steps each
        text = config_path(CONFIGS, task).read_text()
        text = text.replace("data/downstream", str(sets)).replace("max_epochs: 8", "max_steps: 2")
        text = text.replace("batch_size: 8", f"batch_size: 2\n    input_px: {INPUT_PX}")
        config_path(configs, task).write_text(text)
    results = evaluate(
        export, configs, tmp_path / "runs", tmp_path / "reports", tasks, progress=lambda line: None
    )
    assert set(results) == set(tasks)
    assert set(results["pansharpening"]) == {"pretrained", "random", "bicubic", "brovey"}
    assert set(results["segmentation"]) == {"pretrained", "random", "majority"}
    written = json.loads((tmp_path / "reports" / "benchmarks.json").read_text())
    assert {task: set(variants) for task, variants in written.items()} == {
        task: set(variants) for task, variants in results.items()
    }
    report = (tmp_path / "reports" / "benchmarks.md").read_text()
    for row in (
        "| random init |",
        "| baseline: bicubic |",
        "| baseline: brovey |",
        "| baseline: majority |",
        "| msGFM (ours, pretrained) |",
        "Paper (real data, for reference only): PSNR 22.85",
    ):
        assert row in report
    assert sorted(p.name for p in (tmp_path / "reports" / "benchmarks").iterdir()) == sorted(
        f"{task}.png" for task in tasks
    )
    shutil.rmtree(tmp_path / "runs")
