"""Every option of every `clip-search` command says what it does and, where it has one, its default."""

from __future__ import annotations

import argparse

import pytest

from clip_search.cli import build_parser

COMMANDS = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps subcommands here


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_with_its_default(command: str) -> None:
    for action in COMMANDS[command]._actions:  # noqa: SLF001
        if isinstance(action, argparse._HelpAction) or not action.option_strings:  # noqa: SLF001
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        if action.default not in (None, False):
            assert "default" in action.help, f"{command} {action.option_strings[0]} does not say its default ({action.default!r})"
