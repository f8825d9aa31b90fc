"""Command line: ``python -m model.pretrain --config configs/pretrain/<name>.yaml`` (LightningCLI:
every key can be overridden, e.g. ``--trainer.max_steps 20``; ``--ckpt_path`` resumes)."""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from model.datamodules.geopile2 import GeoPile2DataModule
from model.pretraining import MsGFMPretraining


class PretrainCLI(LightningCLI):
    """LightningCLI whose model and data agree on the store, sensors, crop and batch."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.root", "model.store")
        parser.link_arguments("data.sensors", "model.sensors")
        parser.link_arguments("data.crop_px", "model.input_px")
        parser.link_arguments("data.batch_size", "model.batch_size")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="checkpoint to resume from (exactly: weights, optimiser, "
                            "schedule, step and the sampler's epoch)")


def main(args: list[str] | None = None) -> int:
    cli = PretrainCLI(MsGFMPretraining, GeoPile2DataModule, run=False, args=args,
                      seed_everything_default=0, save_config_kwargs={"overwrite": True},
                      parser_kwargs={"prog": "python -m model.pretrain",
                                     "description": "Pretrain msGFM on GeoPile-2."})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config["ckpt_path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
