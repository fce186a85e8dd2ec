"""The `workbench` console script: help on every command, `list`."""

from __future__ import annotations

import pytest

from workbench.cli import build_parser, main


def _subcommands(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield [name], sub
                for path, subsub in _subcommands(sub):
                    yield [name, *path], subsub


@pytest.mark.parametrize("argv", [[]] + [p for p, _ in _subcommands(build_parser())], ids=str)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: workbench" in capsys.readouterr().out


def test_list_shows_titles_and_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "00_tour  —  A tour of the workbench" in out
    assert "-p profile 'default'" in out and "one of smoke|default|full" in out
    assert "-p seed 0" in out and "(int)" in out
