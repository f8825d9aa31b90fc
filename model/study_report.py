"""The reports of an ablation study (:mod:`model.study`): ``ablation.json``, ``.md``, plots.

``ablation.json``: ``{"variants": {variant: {task: {metric: mean, <metric>_std: std}}},
"comparisons": [{name, task, metric, first, second, diff, ci95, seeds, excludes_zero, paper,
paper_direction, paper_direction_holds}], "steps": {"pretrain": {variant: steps},
"finetune": {task: steps}}}`` (the steps the runs took: the model card's, seed 0's
``metrics.json``). A comparison's ``diff`` is signed so that positive means
``first`` is better on the task's main metric (:func:`model.statistics.paired_difference`);
``paper_direction_holds`` says whether its sign is the paper's, and is null where the paper's
two figures tie (there is no direction to reproduce).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from catalogs.atomic_files import finite_or_none, save_figure, write_json, write_text
from model.statistics import paired_difference, summarise
from model.study import Plan
from model.tasks import TASKS

Collected = dict[str, dict[str, dict[int, dict[str, float | None]]]]  # variant, task, seed
TRAINING = "msgfm:training"  # the model card's property that records the pretraining
FIRST_BETTER, SECOND_BETTER, TIE = "first_better", "second_better", "tie"


def collect(study: Plan) -> Collected:
    """Every fine-tune's test metrics: ``{variant: {task: {seed: metrics}}}``."""
    collected: Collected = {}
    for (variant, task, seed), run in study.finetunes.items():
        metrics = json.loads(run.output.read_text())["metrics"]
        collected.setdefault(variant, {}).setdefault(task, {})[seed] = {
            name: finite_or_none(value) for name, value in metrics.items()
        }
    return collected


def paper_direction(config: Mapping[str, Any], comparison: Mapping[str, Any], task: str) -> str:
    """What the paper found for ``comparison`` on ``task``: first or second better, or a tie.

    From the task's paper column where it holds both variants, else the comparison's own
    ``paper`` entry (Figure 4 gives a direction, no table).

    Raises:
        ValueError: naming the comparison, when neither says anything.
    """
    paper = config.get("paper", {}).get(task)
    first, second = comparison["first"], comparison["second"]
    if paper and first in paper["values"] and second in paper["values"]:
        gap = paper["values"][first] - paper["values"][second]
        gap = gap if paper["higher_is_better"] else -gap
        return FIRST_BETTER if gap > 0 else SECOND_BETTER if gap < 0 else TIE
    if "paper" in comparison:
        return str(comparison["paper"])
    raise ValueError(
        f"comparison {comparison['name']!r} on {task}: no paper figures for both variants "
        "and no `paper:` direction"
    )


def compare(config: Mapping[str, Any], collected: Collected) -> list[dict[str, Any]]:
    """Every comparison of the config on every task's main metric."""
    rows = []
    for comparison in config.get("comparisons", []):
        first, second = comparison["first"], comparison["second"]
        for task, task_spec in config["finetune"]["tasks"].items():
            spec = TASKS[task_spec["task"]]
            metric = spec.main_metric

            def values(variant: str, metric: str = metric, task: str = task) -> dict[int, float]:
                runs = collected[variant][task]
                return {s: m[metric] for s, m in runs.items() if m[metric] is not None}

            result = paired_difference(values(first), values(second), spec.higher_is_better(metric))
            direction = paper_direction(config, comparison, task)
            paper = config.get("paper", {}).get(task, {})
            rows.append(
                {
                    "name": comparison["name"],
                    "task": task,
                    "metric": metric,
                    "first": first,
                    "second": second,
                    "diff": result.diff,
                    "ci95": list(result.ci95),
                    "seeds": result.seeds,
                    "excludes_zero": result.excludes_zero,
                    "paper": {
                        "column": paper.get("column"),
                        "first": paper.get("values", {}).get(first),
                        "second": paper.get("values", {}).get(second),
                    },
                    "paper_direction": direction,
                    "paper_direction_holds": None
                    if direction == TIE
                    else (result.diff > 0) == (direction == FIRST_BETTER),
                }
            )
    return rows


def summary(study: Plan, collected: Collected) -> dict[str, Any]:
    """The ``ablation.json`` document."""
    config = study.config
    first_variant, first_seed = next(iter(study.pretrains)), config["seeds"][0]
    return {
        "comparisons": compare(config, collected),
        "variants": {
            variant: {task: summarise(list(seeds.values())) for task, seeds in tasks.items()}
            for variant, tasks in collected.items()
        },
        "steps": {
            "pretrain": {
                variant: json.loads(run.output.read_text())["properties"][TRAINING]["steps"]
                for variant, run in study.pretrains.items()
            },
            "finetune": {
                task: json.loads(run.output.read_text())["steps"]
                for (variant, task, seed), run in study.finetunes.items()
                if variant == first_variant and seed == first_seed
            },
        },
        "seeds": list(config["seeds"]),
    }


def _mean_std(scores: Mapping[str, float | None], metric: str) -> str:
    mean, std = scores.get(metric), scores.get(f"{metric}_std")
    if mean is None:
        return "–"
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def markdown(document: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The ``ablation.md`` report: mean ± std per variant and task, then the comparisons."""
    tasks = config["finetune"]["tasks"]
    steps = document["steps"]
    lines = [
        f"# Ablation study {config['name']}",
        "",
        "Table 6 and Figure 4 of the msGFM paper rerun with this study's config: each variant "
        "pretrained (steps: "
        + ", ".join(f"{v} {n}" for v, n in steps["pretrain"].items())
        + "), then fine-tuned on each task with seeds "
        + ", ".join(map(str, document["seeds"]))
        + " (steps: "
        + ", ".join(f"{task} {n}" for task, n in steps["finetune"].items())
        + "). On the sample world the numbers show what a miniature reproduces, not the "
        "model's quality on the real datasets, where the paper's figures are.",
        "",
        "## Test metrics (mean ± std over seeds)",
        "",
        "| variant | "
        + " | ".join(f"{t} {TASKS[s['task']].main_metric}" for t, s in tasks.items())
        + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for variant, scores in document["variants"].items():
        cells = [_mean_std(scores[task], TASKS[s["task"]].main_metric) for task, s in tasks.items()]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Comparisons",
        "",
        "Difference of the first minus the second variant on the task's main metric, signed so "
        "that positive means the first is better, with its 95 % bootstrap interval over the "
        f"seeds (with {len(document['seeds'])} seeds the interval is coarse: it is built "
        "from their differences only).",
        "",
        "| comparison | task | diff [95 % CI] | interval excludes 0 | paper (real data) "
        "| paper's direction holds |",
        "|---|---|---|---|---|---|",
    ]
    failures = []
    for row in document["comparisons"]:
        low, high = row["ci95"]
        paper = row["paper"]
        quoted = (
            f"{paper['column']}: {paper['first']} vs {paper['second']}"
            if paper["first"] is not None and paper["second"] is not None
            else "Figure 4: first better"
        )
        holds = {True: "yes", False: "**no**", None: "paper ties"}[row["paper_direction_holds"]]
        lines.append(
            f"| {row['name']} ({row['first']} vs {row['second']}) | {row['task']} | "
            f"{row['diff']:+.4g} [{low:+.4g}, {high:+.4g}] | "
            f"{'yes' if row['excludes_zero'] else 'no'} | {quoted} | {holds} |"
        )
        if row["paper_direction_holds"] is False:
            failures.append(row)
    lines += ["", _tally(document["comparisons"]), "", "## What does not reproduce", ""]
    lines += [
        f"- {row['name']} on {row['task']}: the paper finds {row['first']} better "
        f"than {row['second']}, here it is {'worse' if row['diff'] < 0 else 'not better'} "
        f"({row['metric']} {row['diff']:+.4g}{_significance(row)})."
        if row["paper_direction"] == FIRST_BETTER
        else f"- {row['name']} on {row['task']}: the paper finds {row['second']} better "
        f"than {row['first']}, here it is not ({row['metric']} {row['diff']:+.4g}"
        f"{_significance(row)})."
        for row in failures
    ] or ["Every direction the paper reports holds on the sample world."]
    lines += ["", *[f"![{task}](ablation/{task}.png)" for task in tasks], ""]
    return "\n".join(lines)


def _significance(row: Mapping[str, Any]) -> str:
    return ", interval excludes 0" if row["excludes_zero"] else ", interval spans 0"


def _tally(comparisons: list[Mapping[str, Any]]) -> str:
    """How many directions hold and fail, in all and where the interval excludes zero."""

    def count(rows: list[Mapping[str, Any]], holds: bool | None) -> int:
        return sum(row["paper_direction_holds"] is holds for row in rows)

    clear = [row for row in comparisons if row["excludes_zero"]]
    return (
        f"Of {len(comparisons)} comparisons the paper's direction holds in "
        f"{count(comparisons, True)} and fails in {count(comparisons, False)} "
        f"({count(comparisons, None)} are ties in the paper); of the {len(clear)} whose "
        f"interval excludes zero, {count(clear, True)} hold and {count(clear, False)} fail."
    )


def plot(document: Mapping[str, Any], task: str, metric: str, target: Path) -> None:
    """Each variant's mean ``metric`` on ``task`` with its std as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    variants = list(document["variants"])
    means = [document["variants"][v][task][metric] for v in variants]
    stds = [document["variants"][v][task][f"{metric}_std"] or 0.0 for v in variants]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.errorbar(range(len(variants)), means, yerr=stds, fmt="o", capsize=4)
    axes.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    axes.set_ylabel(metric)
    axes.set_title(f"{task}: {metric} (mean ± std over seeds)")
    figure.tight_layout()
    save_figure(figure, target)


def write_reports(study: Plan) -> list[Path]:
    """Write the study's reports where they changed; returns the files written.

    ``ablation.json`` and ``ablation.md`` are compared with what is on disk; the plots are
    redrawn only when the JSON changed (they are drawn from it) or are missing.
    """
    reports = Path(study.config["reports"])
    document = summary(study, collect(study))
    written = []
    json_path = reports / "ablation.json"
    new_json = json.dumps(document, indent=2)
    changed = not json_path.is_file() or json.loads(json_path.read_text()) != json.loads(new_json)
    if changed:
        write_json(json_path, document)
        written.append(json_path)
    for task, spec in study.config["finetune"]["tasks"].items():
        target = reports / "ablation" / f"{task}.png"
        if changed or not target.is_file():
            plot(document, task, TASKS[spec["task"]].main_metric, target)
            written.append(target)
    md_path = reports / "ablation.md"
    text = markdown(document, study.config)
    if not md_path.is_file() or md_path.read_text() != text:
        write_text(md_path, text)
        written.append(md_path)
    return written
