"""The pinned environment: requirements.lock covers pyproject's ranges, and the README's quick
start and CI install it into a new virtual environment and run the same test command."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.pinned_environment import cpu_class, cpu_drift_from_lock, drift_from_lock, read_pins

REPO = Path(__file__).resolve().parents[1]
PINNED = '-c requirements.lock -e ".[dev]"'  # what pip installs: the project, pinned
INSTALL = f"pip install {PINNED}"


def _quick_start() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README: no bash block under Quick start"
    return block.group(1).splitlines()


def _ci_commands() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_every_dependency_is_pinned_inside_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = read_pins()
    for line in (*project["dependencies"], *project["optional-dependencies"]["dev"]):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {line!r}"
        )


def test_the_quick_start_installs_the_lock_into_a_new_venv_then_builds() -> None:
    install, test = _quick_start()
    steps = [step.strip() for step in install.split("&&")]
    assert steps == ["python3.11 -m venv .venv", ". .venv/bin/activate", INSTALL, "dvc repro"]
    assert test == "python -m pytest -n 2"


def test_ci_runs_the_readme_test_command_in_its_own_venv_with_the_lock() -> None:
    commands = _ci_commands()
    venv = next(i for i, c in enumerate(commands) if re.fullmatch(r"python -m venv .*\.venv", c))
    activate = commands.index(". .venv/bin/activate")
    install = next(
        i
        for i, c in enumerate(commands)
        if c.startswith("python -m pip install ") and c.endswith(PINNED)
    )
    assert venv < activate < install
    # Exactly the README's test command, last, inside the venv.
    assert commands[-1] == _quick_start()[1]


def test_a_lock_line_that_pins_nothing_exactly_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# a comment\nnumpy==2.4.6\ntorch>=2.4\n")
    with pytest.raises(ValueError, match=r"requirements.lock:3: not an exact pin .*'torch>=2.4'"):
        read_pins(lock)


def test_drift_names_each_package_at_another_version_or_missing(tmp_path: Path) -> None:
    have = metadata.version("pytest")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"PyTest=={have}\nnumpy==0.0.1\nno_such-package==1.0\n")
    installed = metadata.version("numpy")
    assert drift_from_lock(lock) == [
        "no-such-package: not installed, pinned 1.0",
        f"numpy: {installed} installed, pinned 0.0.1",
    ]
    lock.write_text(f"pytest=={have}\n")
    assert drift_from_lock(lock) == []


def test_the_cpu_class_of_the_lock_is_compared_with_this_cpus(tmp_path: Path) -> None:
    record = tmp_path / "cpu.json"
    record.write_text(json.dumps({"numpy_cpu_dispatch": cpu_class()}))
    assert cpu_drift_from_lock(record) is None
    record.write_text(json.dumps({"numpy_cpu_dispatch": ["X86_V9"]}))
    assert cpu_drift_from_lock(record) == (
        f"dvc.lock was built on ['X86_V9'], this CPU is {cpu_class()}"
    )
