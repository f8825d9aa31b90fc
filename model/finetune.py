"""Command line: ``python -m model.finetune --config configs/finetune/<task>-<data>.yaml``.

Fine-tunes a pretrained export (``--model.pretrained DIR``) or the same network at random init
(``--model.init random``) on one downstream task, then scores it on the test split and writes
``metrics.json`` and ``prediction.png`` to ``--model.out_dir``. LightningCLI: every key can be
overridden, e.g. ``--trainer.max_steps 20 --data.train_fraction 0.1 --seed_everything 1``.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from model.tasks import TASKS, DownstreamTask


class FinetuneCLI(LightningCLI):
    """LightningCLI whose model and data agree on the input size."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link the data's input size to the model's."""
        parser.link_arguments("data.init_args.input_px", "model.init_args.input_px")


def main(args: list[str] | None = None) -> int:
    """Fit, then test; returns 0."""
    from lightning import LightningDataModule

    cli = FinetuneCLI(
        DownstreamTask,
        LightningDataModule,
        run=False,
        args=args,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={
            "prog": "python -m model.finetune",
            "description": "Fine-tune msGFM on a downstream task and "
            "score it on the test split. Tasks: " + ", ".join(TASKS),
        },
    )
    # weights_only: a checkpoint Lightning finds by itself (a SLURM requeue's) holds no code.
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, weights_only=True)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, weights_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
