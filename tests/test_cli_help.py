"""Every option and positional of every `tapsim` sub-command says what it is (`--help`)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from tapsim.cli import build_parser


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """(command path, action) for every action of ``parser`` and of its sub-parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # Each sub-command is listed by its own help line (add_parser(help=...)).
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([name], name, help=helps.get(name))
                yield from walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def missing_help() -> list[str]:
    return [f"{path}: {'/'.join(a.option_strings) or a.dest}"
            for path, a in walk(build_parser(), "tapsim")
            if not a.help or a.help == argparse.SUPPRESS]


def test_every_option_and_positional_has_help() -> None:
    assert missing_help() == []


def test_the_walk_reaches_every_level() -> None:
    paths = {path for path, _ in walk(build_parser(), "tapsim")}
    assert {"tapsim tap", "tapsim card issue", "tapsim account deposit", "tapsim fare price",
            "tapsim terminal run", "tapsim broker config", "tapsim backoffice run",
            "tapsim sim"} <= paths
