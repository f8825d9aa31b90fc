"""Command line: ``python -m model.study --config configs/study/<name>.yaml`` runs an ablation.

A study (e.g. ``configs/study/ablation-sample.yaml``: Table 6 and Figure 4 of the msGFM paper)
pretrains each variant (the base pretrain config plus the variant's overrides), fine-tunes every
variant on every task with every seed (``python -m model.pretrain`` / ``model.finetune`` in a
subprocess each, as a user runs them), and writes ``reports/ablation.{json,md}`` and a plot per
task (:mod:`model.study_report`).

Runs are cached: each has a folder under ``<runs>/<study name>/`` (``pretrain/<variant>``,
``finetune/<variant>/<task>/seed<k>``) holding ``run.json``, the exact command it ran and its
hash. The hash covers the command, the contents of the config file it names and the code that
runs it (:func:`code_digest`); a fine-tune's hash includes its pretraining's. A run whose
``run.json`` matches is never repeated; a changed override, config or source file reruns what it
affects; ``run.json`` is written atomically after the run's outputs, and an unfinished run's
folder is cleared before it is redone. The data (the store, the downstream sets) is DVC's to
track: after `dvc repro` changed it, remove ``<runs>/<name>`` to start afresh.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from catalogs.atomic_files import write_json
from model.evaluate import log_tail, run_module
from model.tasks.downstream import METRICS_FILE

RECORD_FILE = "run.json"
EXPORT_CARD = "model_card.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The sources a run executes (as the pretrain and evaluate stages of dvc.yaml list them): the
# model package but the study's own modules and the benchmarks, and the catalogs modules and
# files it reads (the registry, the layouts, the store format).
CODE_GLOBS = (
    "model/**/*.py",
    "catalogs/atomic_files.py",
    "catalogs/layouts/**/*.py",
    "catalogs/sensors.py",
    "catalogs/sensors.yaml",
    "catalogs/stac.py",
    "catalogs/store_format.py",
    "catalogs/store_shards.py",
)
NOT_RUN_BY_RUNS = ("model/study.py", "model/study_report.py", "model/benchmarks/")


@dataclass(frozen=True)
class Run:
    """One pretraining or fine-tuning run of a study.

    Attributes:
        name: what the progress lines call it (``pretrain msgfm``, ``msgfm segmentation seed1``).
        folder: its own folder (outputs, log, record).
        arguments: the command line after ``python -m``.
        key: the hash of what decides its outputs (its arguments, its config file's contents, the
            code, and its pretraining's key).
        estimate_s: the seconds it is expected to take.
        output: the file whose presence means it finished (with a matching record).
    """

    name: str
    folder: Path
    arguments: tuple[str, ...]
    key: str
    estimate_s: float
    output: Path

    def cached(self) -> bool:
        """Whether the run finished with exactly these arguments."""
        record = self.folder / RECORD_FILE
        if not (record.is_file() and self.output.is_file()):
            return False
        return json.loads(record.read_text()).get("key") == self.key


@dataclass(frozen=True)
class Plan:
    """A study's runs, in order: every pretraining, then every fine-tune.

    Attributes:
        pretrains: the pretraining run of each variant.
        finetunes: (variant, task, seed) -> the fine-tuning run.
        config: the study config (as loaded).
    """

    pretrains: dict[str, Run]
    finetunes: dict[tuple[str, str, int], Run]
    config: dict[str, Any] = field(repr=False)

    @property
    def runs(self) -> list[Run]:
        """Every run in the order they run."""
        return [*self.pretrains.values(), *self.finetunes.values()]


def cli_overrides(overrides: Mapping[str, Any], folder: Path) -> list[str]:
    """``{"model.moe": False}`` -> ``["--model.moe", "false"]`` (non-strings as JSON).

    ``{folder}`` in a value stands for the run's folder (e.g. a checkpoint callback's dirpath).
    """
    arguments = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        arguments += [f"--{key}", text.replace("{folder}", str(folder))]
    return arguments


def schedule(spec: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """A run's length as trainer overrides, and its estimated seconds (start-up aside).

    Args:
        spec: ``steps`` and ``seconds_per_step``, or ``epochs`` and ``seconds_per_epoch``.
    """
    if "epochs" in spec:
        epochs = int(spec["epochs"])
        overrides = {"trainer.max_epochs": epochs, "trainer.max_steps": -1}
        return overrides, epochs * float(spec.get("seconds_per_epoch", 0))
    steps = int(spec["steps"])
    overrides = {"trainer.max_epochs": -1, "trainer.max_steps": steps}
    return overrides, steps * float(spec.get("seconds_per_step", 0))


def _key(*parts: Sequence[str] | str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, or ``missing <path>`` (the run will then say so)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else f"missing {path}"


@functools.cache
def code_digest(root: Path = PROJECT_ROOT) -> str:
    """The SHA-256 over the sources of :data:`CODE_GLOBS` under ``root``, names and bytes.

    Leaves out :data:`NOT_RUN_BY_RUNS`, so that a change to the study's runner or report
    reruns nothing.
    """
    digest = hashlib.sha256()
    for path in sorted({p for pattern in CODE_GLOBS for p in root.glob(pattern) if p.is_file()}):
        name = path.relative_to(root).as_posix()
        if name.startswith(NOT_RUN_BY_RUNS):
            continue
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def plan(config: Mapping[str, Any]) -> Plan:
    """Every run of a study config, with its folder, command and key.

    Raises:
        ValueError: naming the study, when a comparison or paper figure names an unknown
            variant or task.
    """
    root = Path(config["runs"]) / config["name"]
    startup = float(config.get("startup_s", 0))
    spec = config["pretrain"]
    length, seconds = schedule(spec)
    pretrains: dict[str, Run] = {}
    for variant, overrides in config["variants"].items():
        folder = root / "pretrain" / variant
        arguments = (
            "model.pretrain",
            "--config",
            str(spec["config"]),
            *cli_overrides(spec.get("overrides", {}), folder),
            *cli_overrides(overrides, folder),
            *cli_overrides(
                {
                    **length,
                    "trainer.default_root_dir": str(folder),
                    "trainer.enable_progress_bar": False,
                    "model.export_dir": str(folder / "export"),
                },
                folder,
            ),
        )
        pretrains[variant] = Run(
            f"pretrain {variant}",
            folder,
            arguments,
            _key(arguments, file_digest(spec["config"]), code_digest()),
            startup + seconds,
            folder / "export" / EXPORT_CARD,
        )
    finetunes: dict[tuple[str, str, int], Run] = {}
    common = config["finetune"].get("overrides", {})
    for variant, pretrained in pretrains.items():
        for task, task_spec in config["finetune"]["tasks"].items():
            task_length, task_seconds = schedule(task_spec)
            for seed in config["seeds"]:
                folder = root / "finetune" / variant / task / f"seed{seed}"
                arguments = (
                    "model.finetune",
                    "--config",
                    str(task_spec["config"]),
                    *cli_overrides(common, folder),
                    *cli_overrides(task_spec.get("overrides", {}), folder),
                    *cli_overrides(
                        {
                            "seed_everything": seed,
                            "data.init_args.seed": seed,
                            **task_length,
                            "model.pretrained": str(pretrained.folder / "export"),
                            "model.init": "pretrained",
                            "model.out_dir": str(folder),
                            "trainer.default_root_dir": str(folder),
                            "trainer.enable_progress_bar": False,
                        },
                        folder,
                    ),
                )
                finetunes[variant, task, seed] = Run(
                    f"{variant} {task} seed{seed}",
                    folder,
                    arguments,
                    _key(arguments, file_digest(task_spec["config"]), pretrained.key),
                    startup + task_seconds,
                    folder / METRICS_FILE,
                )
    _check_names(config)
    return Plan(pretrains, finetunes, dict(config))


def _check_names(config: Mapping[str, Any]) -> None:
    from model.tasks import TASKS

    variants, tasks = set(config["variants"]), set(config["finetune"]["tasks"])
    for task, spec in config["finetune"]["tasks"].items():
        if spec["task"] not in TASKS:
            raise ValueError(
                f"study {config['name']}: task {task!r} names {spec['task']!r}, not one of "
                f"{sorted(TASKS)}"
            )
    named = {v for c in config.get("comparisons", []) for v in (c["first"], c["second"])}
    for task, paper in config.get("paper", {}).items():
        if task not in tasks:
            raise ValueError(f"study {config['name']}: paper figures for unknown task {task!r}")
        named |= set(paper["values"])
    if unknown := named - variants:
        raise ValueError(
            f"study {config['name']}: comparisons or paper figures name unknown variants "
            f"{sorted(unknown)} (variants: {sorted(variants)})"
        )


def execute(run: Run) -> None:
    """Run one run from a cleared folder; write its record last.

    Raises:
        RuntimeError: naming the run and its log's last lines, on failure.
    """
    if run.folder.exists():
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True)
    log = run.folder / "run.log"
    code = run_module(run.arguments, log)
    if code != 0 or not run.output.is_file():
        raise RuntimeError(
            f"{run.name} failed (exit code {code}, {run.output} "
            f"{'written' if run.output.is_file() else 'missing'}); log {log}:\n{log_tail(log)}"
        )
    write_json(
        run.folder / RECORD_FILE,
        {"key": run.key, "command": ["python", "-m", *run.arguments]},
    )


def describe(study: Plan) -> str:
    """The plan: each run, whether it is cached, and the estimated time of what is left."""
    lines, left = [], 0.0
    for run in study.runs:
        cached = run.cached()
        left += 0 if cached else run.estimate_s
        lines.append(f"{'cached ' if cached else 'to run '} {run.name} (~{run.estimate_s:.0f} s)")
    total = sum(run.estimate_s for run in study.runs)
    lines.append(
        f"{len(study.runs)} runs, estimated {total / 3600:.2f} h in all; "
        f"{left / 3600:.2f} h left to run"
    )
    return "\n".join(lines)


def _print_now(line: str) -> None:
    print(line, flush=True)  # a log file sees each run as it ends


def run_study(
    study: Plan,
    progress: Callable[[str], None] = _print_now,
    execute_run: Callable[[Run], None] = execute,
) -> int:
    """Run every run of ``study`` that is not cached, in order.

    Returns:
        How many runs ran.
    """
    pending = [run for run in study.runs if not run.cached()]
    left = sum(run.estimate_s for run in pending)
    estimated_done = 0.0
    start = time.perf_counter()
    for done, run in enumerate(pending, 1):
        execute_run(run)
        left -= run.estimate_s
        estimated_done += run.estimate_s
        elapsed = time.perf_counter() - start
        # The estimate of what is left, scaled by how fast the runs so far went against theirs.
        eta = left * elapsed / estimated_done if estimated_done else left
        progress(
            f"[{done}/{len(pending)}] {run.name} done; elapsed {elapsed / 60:.1f} min, "
            f"ETA {eta / 60:.1f} min"
        )
    return len(pending)


def load_config(path: Path) -> dict[str, Any]:
    """A study config, with its ``name`` defaulting to the file's stem.

    ``paper_from: <yaml>`` takes ``paper`` and ``comparisons`` from that file (the paper's
    figures, shared by the study configs) where the config has none of its own.
    """
    config = yaml.safe_load(path.read_text())
    config.setdefault("name", path.stem)
    if "paper_from" in config:
        shared = yaml.safe_load(Path(config["paper_from"]).read_text())
        for key in ("paper", "comparisons"):
            config.setdefault(key, shared.get(key, {} if key == "paper" else []))
    return config


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, then plan, run and report the study."""
    from model.study_report import write_reports  # pyplot only when reporting

    parser = argparse.ArgumentParser(
        prog="python -m model.study",
        description="Run an ablation study: pretrain each variant, fine-tune each on every "
        "task and seed, and write reports/ablation.{json,md} with a plot per task. Finished "
        "runs whose command, config file and code are unchanged are reused, so a rerun only "
        "does what changed; a failed run stops the study (its log is printed) and a rerun "
        "resumes there.",
        epilog="Configs: configs/study/ablation-sample.yaml (the sample world, about 1 h on 2 "
        "cores), configs/study/ablation-geopile2.yaml (the real data, a GPU cluster). Runs go "
        "to <runs>/<name>/pretrain/<variant> and .../finetune/<variant>/<task>/seed<k>, each "
        "with run.json (its command and hash) and run.log.",
    )
    parser.add_argument(
        "--config", type=Path, required=True, help="the study config (configs/study/*.yaml)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (each run, cached or not, and the estimated time); run nothing",
    )
    args = parser.parse_args(argv)
    study = plan(load_config(args.config))
    if args.dry_run:
        print(describe(study))
        return 0
    print(describe(study).splitlines()[-1], flush=True)
    try:
        ran = run_study(study)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    written = write_reports(study)
    if ran == 0 and not written:
        print("nothing to do: every run is cached and the reports are up to date")
    else:
        print(f"{ran} runs ran; reports written: {', '.join(map(str, written)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
