"""Two steps of msGFM pretraining with Lightning DDP on 2 CPU processes (gloo), for
tests/test_pretrain.py: ``python tests/ddp_pretrain.py CONFIG OUT`` writes each rank's final
weights and the chip indices it trained on to ``OUT/rank<r>.pt``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, installed or not

from model.datamodules.geopile2 import GeoPile2DataModule  # noqa: E402
from model.pretrain import PretrainCLI  # noqa: E402
from model.tasks.pretraining import MsGFMPretraining  # noqa: E402


class RecordRank(lightning.Callback):
    """Keeps the (sensor, chip) pairs each rank trains on and saves its weights at the end."""

    def __init__(self, out: Path) -> None:
        self.out, self.chips = out, []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self.chips += [
            (sensor, int(chip)) for sensor, sub in batch["sensors"].items() for chip in sub["index"]
        ]

    def on_train_end(self, trainer: Any, module: Any) -> None:
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        torch.save(
            {"weights": weights, "chips": self.chips}, self.out / f"rank{trainer.global_rank}.pt"
        )


def main() -> None:
    config, out = sys.argv[1], Path(sys.argv[2])
    cli = PretrainCLI(
        MsGFMPretraining,
        GeoPile2DataModule,
        run=False,
        args=[
            "--config",
            config,
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp_find_unused_parameters_true",
        ],
    )
    cli.trainer.callbacks.append(RecordRank(out))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)


if __name__ == "__main__":
    main()
