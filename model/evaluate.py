"""Command line: ``python -m model.evaluate`` runs the downstream mini benchmarks.

For each task's sample config (``configs/finetune/<task>-sample.yaml``) it fine-tunes the
pretrained export and the same network at random init (``python -m model.finetune`` in a
subprocess each, exactly as a user runs it), scores the classical baselines on the same test
split, and writes ``reports/benchmarks.json`` (DVC metrics: ``{task: {variant: {metric:
value}}}``), ``reports/benchmarks.md`` (a table laid out like Table 3 of the msGFM paper) and
one prediction picture per task.

With ``--seeds N`` (N > 1) each init is fine-tuned with seeds 0..N-1 (``--seed_everything k
--data.init_args.seed k``, runs in ``<runs>/<task>/<variant>/seed<k>``); each metric is then the
mean over seeds with ``<metric>_std`` (sample std) beside it, and each task gains
``"pretrained_vs_random": {"metric", "diff", "ci95"}``: the paired difference on its main metric
with its 95 % bootstrap interval (:mod:`model.statistics`; positive: pretrained better). The
baselines are scored once (they have no seed), so they have no ``_std``. One seed (the default)
keeps the single run's paths and report shape.

What each task measures (columns, main metric, baselines, title, the paper's figure) comes from
its :class:`~model.tasks.downstream.TaskSpec` in :data:`model.tasks.TASKS`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning import LightningDataModule

from catalogs.atomic_files import atomic_folder, finite_or_none, write_json, write_text
from model.statistics import paired_difference, summarise
from model.tasks import TASKS
from model.tasks.downstream import FIGURE_FILE, METRICS_FILE

Results = dict[str, dict[str, Any]]  # task -> row -> metric -> value (None: unmeasurable)
VARIANTS = ("pretrained", "random")
COMPARISON = "pretrained_vs_random"  # the task's entry that is not a row


def config_path(configs: Path, task: str) -> Path:
    """The sample config of ``task``."""
    return configs / f"{task.replace('_', '-')}-sample.yaml"


def run_dir(runs_dir: Path, task: str, variant: str, seed: int, seeds: int) -> Path:
    """The folder of one fine-tune: ``<task>/<variant>``, with ``seed<k>`` below when seeds > 1."""
    folder = runs_dir / task / variant
    return folder if seeds == 1 else folder / f"seed{seed}"


def finetune(
    config: Path,
    pretrained: Path,
    init: str,
    out_dir: Path,
    log: Path,
    overrides: Sequence[str] = (),
) -> None:
    """Run ``python -m model.finetune`` for one (task, variant); its output goes to ``log``.

    ``overrides`` are further command-line arguments (e.g. the seed's).

    Raises:
        RuntimeError: naming the config, the variant and the log's last lines, on failure.
    """
    command = [
        "model.finetune",
        "--config",
        str(config),
        "--model.pretrained",
        str(pretrained),
        "--model.init",
        init,
        "--model.out_dir",
        str(out_dir),
        "--trainer.default_root_dir",
        str(out_dir),
        "--trainer.enable_progress_bar",
        "false",
        *overrides,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    code = run_module(command, log)
    if code != 0:
        raise RuntimeError(
            f"{config} ({init}) failed with exit code {code}; log {log}:\n{log_tail(log)}"
        )


def run_module(arguments: Sequence[str], log: Path) -> int:
    """Run ``python -m <arguments>`` unbuffered, its output and errors into ``log``.

    Returns:
        The exit code.
    """
    with log.open("w") as stream:
        return subprocess.run(
            [sys.executable, "-m", *arguments],
            stdout=stream,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).returncode


def log_tail(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of ``log``, for an error message."""
    return "\n".join(log.read_text().splitlines()[-lines:])


def data_module(config: Path) -> LightningDataModule:
    """The data module a finetune config describes, set up for fitting and testing."""
    spec = yaml.safe_load(config.read_text())["data"]
    module_name, _, class_name = spec["class_path"].rpartition(".")
    data = getattr(importlib.import_module(module_name), class_name)(**spec.get("init_args", {}))
    data.setup("fit")
    data.setup("test")
    return data


def markdown_report(results: Results, runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The Table-3-like report: rows random init, baselines, ours; columns each task's metrics."""
    lines = [
        "# Downstream mini benchmarks on the sample world",
        "",
        "Fine-tuned for minutes on the CPU on the embedded sample world's benchmark sets "
        "(`dvc repro evaluate`), so the numbers show the pipeline working, not the "
        "model's quality on the real datasets. Same network, data, seed and schedule for "
        "both inits; metrics over the whole test split. Best of each column in bold.",
        "",
    ]
    for task in results:
        spec = TASKS[task]
        columns = spec.columns
        baselines = [v for v in results[task] if v not in (*VARIANTS, COMPARISON)]
        rows = ["random", *baselines, "pretrained"]
        lines += [
            f"## {spec.title} ({task})",
            "",
            "| method | " + " | ".join(f"{m} {'↑' if up else '↓'}" for m, up in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for row in rows:
            cells = []
            for metric, up in columns:
                values = [
                    results[task][r][metric]
                    for r in rows
                    if results[task][r].get(metric) is not None
                ]
                value = results[task][row].get(metric)
                best = value is not None and value == (max(values) if up else min(values))
                text = "–" if value is None else f"{value:.4g}"
                text = f"**{text}**" if best else text
                std = results[task][row].get(f"{metric}_std")
                cells.append(text if std is None else f"{text} ± {std:.2g}")
            label = {"random": "random init", "pretrained": "msGFM (ours, pretrained)"}.get(
                row, f"baseline: {row}"
            )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        run = runs[task]
        lines += [
            "",
            f"Pretrained embeddings: {run['embeddings']}; {run['train_samples']} "
            f"training samples, {run['steps']} steps. Paper (real data, for reference "
            f"only): {spec.paper}.",
            "",
            f"![{task} predictions](benchmarks/{task}.png)",
            "",
        ]
    lines += ["## Summary", "", _summary(results), ""]
    return "\n".join(lines)


def _summary(results: Results) -> str:
    """Which tasks pretrained wins: by its seeds' 95 % interval where there is one."""
    compared = [t for t in results if COMPARISON in results[t]]
    if not compared:
        wins = [t for t in results if _better(t, results[t]["pretrained"], results[t]["random"])]
        return (
            f"Pretrained beats random init on the main metric of "
            f"{len(wins)} of {len(results)} tasks ({', '.join(wins) or 'none'})."
        )
    wins = [t for t in compared if results[t][COMPARISON]["ci95"][0] > 0]
    details = "; ".join(
        f"{t}: {c['metric']} {c['diff']:+.4g} [{c['ci95'][0]:+.4g}, {c['ci95'][1]:+.4g}]"
        for t in compared
        for c in [results[t][COMPARISON]]
    )
    return (
        f"Pretrained beats random init on the main metric, with a 95 % bootstrap interval over "
        f"the seeds that excludes zero, on {len(wins)} of {len(compared)} tasks "
        f"({', '.join(wins) or 'none'}). Pretrained minus random (positive: pretrained "
        f"better): {details}. With few seeds the interval is coarse (it is built from "
        "their differences only)."
    )


def _better(task: str, ours: Mapping[str, float | None], other: Mapping[str, float | None]) -> bool:
    metric = TASKS[task].main_metric
    higher = TASKS[task].higher_is_better(metric)
    if ours[metric] is None or other[metric] is None:
        return False
    return ours[metric] > other[metric] if higher else ours[metric] < other[metric]


def aggregate(task: str, runs: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """One task's rows from its fine-tunes' metrics (``{variant: {seed: metrics}}``).

    Returns:
        With one seed, each variant's metrics as they are; with more, each variant's mean and
        ``<metric>_std`` over its seeds (:func:`model.statistics.summarise`) and
        ``pretrained_vs_random``: the paired difference on the main metric (positive:
        pretrained better) and its 95 % bootstrap interval.
    """
    runs = {
        variant: {
            seed: {m: finite_or_none(v) for m, v in scores.items()} for seed, scores in s.items()
        }
        for variant, s in runs.items()
    }
    if all(len(seeds) == 1 for seeds in runs.values()):
        return {variant: next(iter(seeds.values())) for variant, seeds in runs.items()}
    rows: dict[str, Any] = {v: summarise(list(seeds.values())) for v, seeds in runs.items()}
    spec = TASKS[task]
    metric = spec.main_metric

    def main_metric(variant: str) -> dict[int, float]:
        return {s: m[metric] for s, m in runs[variant].items() if m[metric] is not None}

    difference = paired_difference(
        main_metric("pretrained"), main_metric("random"), spec.higher_is_better(metric)
    )
    rows[COMPARISON] = {
        "metric": metric,
        "diff": difference.diff,
        "ci95": list(difference.ci95),
        "seeds": difference.seeds,
    }
    return rows


def seed_overrides(seed: int) -> list[str]:
    """The fine-tuning arguments of seed ``seed``: the global seed and the data order's."""
    return ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]


def evaluate(
    pretrained: Path,
    configs: Path,
    runs_dir: Path,
    reports: Path,
    tasks: Iterable[str] = TASKS,
    progress: Callable[[str], None] = print,
    seeds: int = 1,
) -> Results:
    """Fine-tune both inits (with each seed) and score the baselines for every task; report.

    The reports are written at the end (:func:`write_reports`), so a failed run leaves the
    previous reports untouched. One seed runs each config as it is; ``seeds`` > 1 runs seeds
    0..seeds-1 (:func:`seed_overrides`).
    """
    results: Results = {}
    details: dict[str, dict[str, Any]] = {}
    for task in tasks:
        config = config_path(configs, task)
        runs: dict[str, dict[int, Any]] = {}
        for variant in VARIANTS:
            runs[variant] = {}
            for seed in range(seeds):
                start = time.perf_counter()
                out_dir = run_dir(runs_dir, task, variant, seed, seeds)
                overrides = seed_overrides(seed) if seeds > 1 else []
                finetune(config, pretrained, variant, out_dir, out_dir / "finetune.log", overrides)
                record = json.loads((out_dir / METRICS_FILE).read_text())
                runs[variant][seed] = record["metrics"]
                if variant == "pretrained" and seed == 0:
                    details[task] = record
                progress(
                    f"{task} {variant}{f' seed {seed}' if seeds > 1 else ''}: "
                    f"{_main(task, record['metrics'])} ({time.perf_counter() - start:.0f} s)"
                )
        results[task] = aggregate(task, runs)
        for name, scores in TASKS[task].baselines(data_module(config)).items():
            results[task][name] = scores
            progress(f"{task} baseline {name}: {_main(task, scores)}")
    write_reports(results, details, runs_dir, reports, seeds)
    return results


def _main(task: str, metrics: Mapping[str, float | None]) -> str:
    metric = TASKS[task].main_metric
    value = metrics[metric]
    return f"{metric} {'unmeasurable' if value is None else f'{value:.4g}'}"


def write_reports(
    results: Results, details: Mapping[str, Any], runs_dir: Path, reports: Path, seeds: int = 1
) -> None:
    """Write ``reports/benchmarks.json``, ``benchmarks.md`` and ``benchmarks/<task>.png``.

    The JSON is strict: a metric that is not finite, i.e. unmeasurable, is null. The pictures
    are the pretrained run's picture of each task under ``runs_dir`` (seed 0's of ``seeds``).
    Each file is replaced atomically.
    """
    results = {
        task: {
            row: scores
            if row == COMPARISON
            else {metric: finite_or_none(value) for metric, value in scores.items()}
            for row, scores in rows.items()
        }
        for task, rows in results.items()
    }
    with atomic_folder(reports / "benchmarks") as pictures:
        for task in results:
            picture = run_dir(runs_dir, task, "pretrained", 0, seeds) / FIGURE_FILE
            shutil.copy(picture, pictures / f"{task}.png")
    write_json(reports / "benchmarks.json", results)
    write_text(reports / "benchmarks.md", markdown_report(results, details))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run :func:`evaluate`."""
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluate",
        description="Downstream mini benchmarks: fine-tune the pretrained export and random "
        "init on each task's sample config, score the classical baselines, and write "
        "reports/benchmarks.{json,md} with a prediction picture per task.",
    )
    parser.add_argument(
        "--pretrained",
        type=Path,
        default=Path("runs/pretrain/tiny-sample/export"),
        help="the pretrained export (default: the tiny sample model)",
    )
    parser.add_argument(
        "--configs",
        type=Path,
        default=Path("configs/finetune"),
        help="folder of the <task>-sample.yaml configs",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs/finetune"),
        help="where each fine-tuning run writes its logs and metrics",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=Path("reports"),
        help="where the reports go (default: reports)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help="tasks to run (default: all four)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fine-tune each init with seeds 0..N-1 and report mean ± std and the paired "
        "95 %% bootstrap interval of pretrained minus random (default 1: the configs' seed, "
        "runs in <runs>/<task>/<variant>)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1")
    if not (args.pretrained / "model_card.json").is_file():
        parser.error(f"{args.pretrained}: no model_card.json (run `dvc repro pretrain` first)")
    try:
        evaluate(
            args.pretrained, args.configs, args.runs, args.reports, args.tasks, seeds=args.seeds
        )
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"wrote {args.reports / 'benchmarks.md'} and {args.reports / 'benchmarks.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
