"""Command line: ``python -m model.pretrain --config configs/pretrain/<name>.yaml``.

LightningCLI: every key can be overridden, e.g. ``--trainer.max_steps 20``; ``--ckpt_path``
resumes.

A checkpoint, local or a URL, is loaded weights-only: tensors and plain containers, never
pickled code (Lightning would unpickle a remote one in full).
"""

from __future__ import annotations

import pickle
import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from model.datamodules.geopile2 import GeoPile2DataModule
from model.tasks.pretraining import MsGFMPretraining


class PretrainCLI(LightningCLI):
    """LightningCLI whose model and data agree on the store, sensors, crop and batch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data's store, sensors, crop and batch to the model's; add ``--ckpt_path``."""
        parser.link_arguments("data.root", "model.store")
        parser.link_arguments("data.sensors", "model.sensors")
        parser.link_arguments("data.crop_px", "model.input_px")
        parser.link_arguments("data.batch_size", "model.batch_size")
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="checkpoint to resume from (exactly: weights, optimiser, "
            "schedule, step and the sampler's epoch)",
        )


def main(args: list[str] | None = None) -> int:
    """Pretrain (resuming from ``--ckpt_path`` if given); returns 0.

    Raises:
        ValueError: naming the checkpoint, when it holds pickled objects other than tensors
            and plain containers (it is refused before any of them is built).
    """
    cli = PretrainCLI(
        MsGFMPretraining,
        GeoPile2DataModule,
        run=False,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "python -m model.pretrain",
            "description": "Pretrain msGFM on GeoPile-2.",
        },
    )
    checkpoint = cli.config["ckpt_path"]
    try:
        cli.trainer.fit(
            cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, weights_only=True
        )
    except pickle.UnpicklingError as error:
        if checkpoint is None:  # not a checkpoint's: e.g. a DataLoader worker's message
            raise
        raise ValueError(
            f"{checkpoint}: refused by a weights-only load (it holds pickled "
            "objects other than tensors and plain containers): "
            f"{error}"
        ) from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
