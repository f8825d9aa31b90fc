"""`dvc repro` from a fresh copy of the repository builds GeoPile-2 from the sample world, and a
changed parameter re-runs only the stages that use it."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.pinned_environment import cpu_drift_from_lock, drift_from_lock

# One worker runs this module, so its module fixtures are built once.
pytestmark = pytest.mark.xdist_group("dvc")
REPO = Path(__file__).resolve().parents[1]
# The stages that build and validate the store, then pretraining on the validated store.
STORE_STAGES = ("sample", "discover", "fetch", "coregister", "shard", "validate")
STAGES = (*STORE_STAGES, "pretrain")
# Stages after pretraining: the benchmark-size downstream sets and the fine-tuning runs (over
# ten minutes of CPU), checked here only as the stages `dvc status` says are left.
BENCHMARK_STAGES = ("downstream", "evaluate")
PROJECT_PACKAGES = ("catalogs", "pipeline", "model")
SIBLING_DATA = re.compile(r'Path\(__file__\)\.with_name\("([^"]+)"\)')  # a module's data file


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _dvc(*args: str, cwd: Path) -> str:
    return _run(sys.executable, "-m", "dvc", *args, cwd=cwd)


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's tracked and new (not ignored) files, as a new git repo."""
    listed = _run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO)
    copy = tmp_path_factory.mktemp("fresh") / "repo"
    for name in listed.splitlines():
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    _run("git", "init", "-q", cwd=copy)
    return copy


@pytest.fixture(scope="module")
def repro_output(fresh_repo: Path) -> str:
    """What `dvc repro pretrain` printed in the fresh copy. Pretraining runs 10 steps instead
    of the config's minutes: its outputs are what is checked here."""
    config = fresh_repo / "configs" / "pretrain" / "tiny-sample.yaml"
    text = config.read_text()
    steps = re.search(r"^  max_steps: \d+", text, re.M)
    assert steps is not None
    config.write_text(text.replace(steps.group(0), "  max_steps: 10"))
    return _dvc("repro", "pretrain", cwd=fresh_repo)


@pytest.fixture(scope="module")
def reproduced(fresh_repo: Path, repro_output: str) -> Path:
    """The fresh copy after `dvc repro pretrain`: every stage but the downstream benchmarks
    (every test leaves params.yaml as it found it)."""
    return fresh_repo


@contextlib.contextmanager
def _edited_params(repo: Path, old: str, new: str) -> Iterator[None]:
    """params.yaml with ``old`` replaced by ``new`` (exactly once), restored afterwards."""
    params = repo / "params.yaml"
    text = params.read_text()
    assert text.count(old) == 1, old
    params.write_text(text.replace(old, new))
    try:
        yield
    finally:
        params.write_text(text)


def _module_file(name: str) -> Path | None:
    """The file of a project module (``pipeline.items`` -> pipeline/items.py), or None."""
    base = REPO.joinpath(*name.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _project_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports anywhere in its code, with their packages."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    found = set()
    for name in names:
        if name.split(".")[0] in PROJECT_PACKAGES:
            parts = name.split(".")
            found |= {
                ".".join(parts[:n])
                for n in range(1, len(parts) + 1)
                if _module_file(".".join(parts[:n]))
            }
    return found


def _code_of(module: str, unexpanded: frozenset[str] = frozenset()) -> set[str]:
    """The files (relative to the repository) of ``module``, of what it imports, transitively,
    and of the data files those read; modules in ``unexpanded`` count without their imports."""
    parts = module.split(".")
    seen, todo = set(), [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if name not in unexpanded:
                todo += _project_imports(_module_file(name))
    paths = {_module_file(name) for name in seen}
    paths |= {
        path.with_name(data)
        for path in set(paths)
        for data in SIBLING_DATA.findall(path.read_text())
    }
    files = {path.relative_to(REPO).as_posix() for path in paths}
    return {f for f in files if not (f.endswith("__init__.py") and not (REPO / f).stat().st_size)}


def _stages_run(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran (or, with --dry, would run), in order."""
    return re.findall(r"^Running stage '([^']+)'", output, re.M)


def _stages_skipped(output: str) -> list[str]:
    return re.findall(r"^Stage '([^']+)' didn't change, skipping", output, re.M)


def test_dvc_repro_builds_the_sample_world(reproduced: Path, repro_output: str) -> None:
    catalog = reproduced / "data" / "sample" / "catalog.json"
    assert catalog.is_file()
    # Pretraining reads the validated store: repro validates it first (or finds its validation
    # up to date: the committed report already describes a store of the same bytes).
    ran, skipped = _stages_run(repro_output), _stages_skipped(repro_output)
    assert set(ran) | set(skipped) == set(STAGES) and "pretrain" in ran
    order = re.findall(r"^(?:Running stage|Stage) '([^']+)'", repro_output, re.M)
    assert order.index("validate") < order.index("pretrain")
    lock = (reproduced / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in STAGES)
    status = _dvc("status", "--with-deps", "pretrain", cwd=reproduced)
    assert "up to date" in status
    # Every stage it ran is up to date, whatever versions built it; only the benchmark stages
    # are left to run (a dry run cannot say so: it would need the downstream sets on disk to
    # hash them for evaluate).
    assert set(json.loads(_dvc("status", "--json", cwd=reproduced))) == set(BENCHMARK_STAGES)
    with _edited_params(reproduced, "seed: 0", "seed: 1"):
        status = json.loads(_dvc("status", "--with-deps", "--json", "pretrain", cwd=reproduced))
        # (the command interpolates the seed, so it changed too)
        assert {"changed deps": {"params.yaml": {"sample.seed": "modified"}}} in status["sample"]


def test_every_stage_depends_on_the_code_it_runs() -> None:
    """A stage's deps cover its entry module and everything that imports, so a changed module
    re-runs every stage it can change (the stage driver, pipeline/stages.py, counts as a file:
    it imports every stage)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        command = re.match(r"python -m ([\w.]+)(?: (\w+))?", stage["cmd"])
        assert command is not None, f"stage {name}: not a python -m command: {stage['cmd']}"
        module, subcommand = command.groups()
        if module == "pipeline":
            code = _code_of(f"pipeline.{subcommand}", frozenset({"pipeline.stages"}))
            code.add("pipeline/stages.py")
        else:
            code = _code_of(f"{module}.__main__" if _module_file(f"{module}.__main__") else module)
        deps = [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage["deps"]]
        missing = sorted(f for f in code if not any(f == d or f.startswith(f"{d}/") for d in deps))
        assert missing == [], f"stage {name} runs code it does not depend on: {missing}"


def test_the_committed_lock_is_reproduced_under_the_pinned_environment(reproduced: Path) -> None:
    """Under requirements.lock's versions, the store stages give byte for byte what the
    committed dvc.lock records (elsewhere other library versions may write other bytes)."""
    drift = drift_from_lock()
    if drift:
        pytest.skip(
            f"not the pinned environment ({len(drift)} packages differ from "
            f"requirements.lock, e.g. {drift[0]})"
        )
    if (cpu := cpu_drift_from_lock()) is not None:
        pytest.skip(
            f"not the pinned environment: {cpu} (numpy's exp and log round differently across them)"
        )
    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    rebuilt = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    for stage in STORE_STAGES:
        assert rebuilt[stage] == committed[stage], (
            f"stage {stage} gave other bytes than the committed dvc.lock records: regenerate "
            "dvc.lock under requirements.lock (README, 'Reproducing the committed results')"
        )


def test_a_shard_parameter_reruns_only_shard_and_validate(reproduced: Path) -> None:
    store_root = reproduced / "data" / "geopile2.zarr" / "zarr.json"
    assert json.loads(_dvc("status", "--with-deps", "--json", "pretrain", cwd=reproduced)) == {}
    with _edited_params(reproduced, "chips_per_shard: 256", "chips_per_shard: 64"):
        # Only the stage that reads the parameters (dvc.yaml: pipeline.shard) is out of date;
        # a dry run lists just it (the store it would write has not changed yet)...
        assert json.loads(_dvc("status", "--with-deps", "--json", "pretrain", cwd=reproduced)) == {
            "shard": [{"changed deps": {"params.yaml": {"pipeline.shard": "modified"}}}]
        }
        assert _stages_run(_dvc("repro", "--dry", "pretrain", cwd=reproduced)) == ["shard"]
        # ... and a repro of the store's stages runs it and validate, which reads its new
        # store; nothing upstream. (Pretraining, downstream of the store, is left out here:
        # minutes of CPU that would not tell more.)
        output = _dvc("repro", "validate", cwd=reproduced)
        assert _stages_run(output) == ["shard", "validate"]
        assert _stages_skipped(output) == ["sample", "discover", "fetch", "coregister"]
        assert json.loads(store_root.read_text())["attributes"]["chips_per_shard"] == 64
        assert json.loads(_dvc("status", "--with-deps", "--json", "validate", cwd=reproduced)) == {}
    # Back to the old value: the same two stages again (shard's store may come from DVC's run
    # cache instead of a run), and the store is the one pretraining used: all up to date.
    output = _dvc("repro", "validate", cwd=reproduced)
    assert _stages_skipped(output) == ["sample", "discover", "fetch", "coregister"]
    assert _stages_run(output) in (["validate"], ["shard", "validate"])
    assert json.loads(store_root.read_text())["attributes"]["chips_per_shard"] == 256
    assert json.loads(_dvc("status", "--with-deps", "--json", "pretrain", cwd=reproduced)) == {}


def test_dvc_repro_pretrains_msgfm_on_the_sample_store(reproduced: Path) -> None:
    run = reproduced / "runs" / "pretrain" / "tiny-sample"
    assert {p.name for p in (run / "export").iterdir()} == {
        "encoder.safetensors",
        "model_card.json",
    }
    assert (run / "logs" / "metrics.csv").is_file()
    # The end of training draws each sensor and each cross pair (Figure 3).
    last = {p.stem.split("_", 1)[1] for p in (run / "logs" / "figures").glob("step0000010_*")}
    pairs = (("dsm", "rgb"), ("sentinel1_grd", "sentinel2_l2a"))
    assert last == {f"{a}_to_{b}" for pair in pairs for a in pair for b in pair}


def test_dvc_metrics_show_prints_the_chip_counts(reproduced: Path) -> None:
    metrics = json.loads((reproduced / "reports" / "geopile2.json").read_text())
    summary = json.loads((reproduced / "data" / "work" / "coregister.json").read_text())
    assert metrics["chips"] == summary["chips"]
    assert set(metrics["chips"]) == {"dsm", "rgb", "sentinel1_grd", "sentinel2_l2a"}
    shown = _dvc("metrics", "show", cwd=reproduced)  # a table: header, then one row per file
    header, values = (line.split() for line in shown.splitlines()[:2])
    assert values[0] == "reports/geopile2.json"
    for sensor, count in metrics["chips"].items():
        assert values[header.index(f"chips.{sensor}")] == str(count)
