"""Command line: ``python -m model pretrain|finetune|evaluate|study|predict|export-onnx|bench``.

One entry for every command of the model: each subcommand hands the rest of the command line to
its module's ``main`` (``python -m model finetune --help`` prints that module's own help), so
``python -m model pretrain ...`` and ``python -m model.pretrain ...`` are the same command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module whose main(argv) runs it, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("model.pretrain", "pretrain msGFM on GeoPile-2 (LightningCLI)"),
    "finetune": ("model.finetune", "fine-tune on one downstream task and test it (LightningCLI)"),
    "evaluate": ("model.evaluate", "the downstream mini benchmarks and their reports"),
    "study": ("model.study", "an ablation study (pretrain variants x tasks x seeds), cached"),
    "predict": ("model.predict", "map a whole scene from STAC items into a COG"),
    "export-onnx": ("model.export_onnx", "export a fine-tuned network to ONNX"),
    "bench": ("model.benchmarks.__main__", "the loader and model benchmarks"),
}


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``.

    Args:
        argv: the command line after ``python -m model`` (default: ``sys.argv[1:]``).

    Returns:
        The subcommand's exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m model",
        description="msGFM on GeoPile-2: pretraining, fine-tuning, "
        "the downstream benchmarks and the benchmarks of the loader and network. "
        "`python -m model COMMAND --help` shows a command's own options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    if argv is None:
        # From the shell: the subcommand gets its arguments as ``args`` only (LightningCLI
        # warns when it sees them both there and in sys.argv).
        argv, sys.argv = sys.argv[1:], sys.argv[:1]
    # Only the first word is this parser's: all the rest, --help included, is the command's.
    args, rest = parser.parse_args(argv[:1]), argv[1:]
    # The module is imported only now: each pulls in its own heavy dependencies.
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
