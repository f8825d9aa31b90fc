"""One command-line entry (model/__main__.py): ``python -m model COMMAND ...`` runs the command's
module with the rest of the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model.__main__ import COMMANDS, main


def test_help_lists_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "model", "--help"], capture_output=True, text=True, check=True
    )
    expected = {"pretrain", "finetune", "evaluate", "study", "predict", "export-onnx", "bench"}
    for command in expected:
        assert command in done.stdout
    assert set(COMMANDS) == expected


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "study", "predict"])
def test_the_rest_of_the_line_goes_to_the_command(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    monkeypatch.setattr(f"model.{command}.main", lambda argv: seen.append(argv) or 3)
    assert main([command, "--config", "x.yaml", "--help"]) == 3
    assert seen == [["--config", "x.yaml", "--help"]]


@pytest.mark.parametrize(
    ("command", "prog"),
    [
        ("evaluate", "python -m model.evaluate"),
        ("study", "python -m model.study"),
        ("finetune", "python -m model.finetune"),
        ("pretrain", "python -m model.pretrain"),
        ("predict", "python -m model.predict"),
        ("export-onnx", "python -m model.export_onnx"),
    ],
)
def test_a_command_s_help_is_its_module_s(
    command: str, prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog}")


def test_an_unknown_command_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["infer"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'infer'" in capsys.readouterr().err
