"""`dvc repro` from a fresh copy of the repository builds the sample world."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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


def test_dvc_repro_builds_the_sample_world(fresh_repo: Path) -> None:
    _run(sys.executable, "-m", "dvc", "repro", cwd=fresh_repo)
    catalog = fresh_repo / "data" / "sample" / "catalog.json"
    assert catalog.is_file()
    assert "sample" in (fresh_repo / "dvc.lock").read_text()
    status = _run(sys.executable, "-m", "dvc", "status", cwd=fresh_repo)
    assert "up to date" in status
    params = fresh_repo / "params.yaml"
    params.write_text(params.read_text().replace("seed: 0", "seed: 1"))
    status = _run(sys.executable, "-m", "dvc", "status", cwd=fresh_repo)
    assert "sample" in status and "modified" in status and "sample.seed" in status
