"""Every command the README shows is one its tool accepts.

A reader copies these lines; a flag renamed in the code and not in the README
would fail them at the first step. Each command in the README's code blocks
is parsed the way its program's ``main`` parses its command line, and every
``make`` target it names exists in the Makefile. The flows themselves run in
the end-to-end tests; this checks the words.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _parsers() -> dict[str, Callable[[list[str]], argparse.Namespace]]:
    from breachmatch import cli as sdk_cli
    from breachmatch_ingest import cli as ingest_cli
    from breachmatch_matcher import cli as matcher_cli
    from breachmatch_notifier import cli as notifier_cli

    return {
        "breachmatch": sdk_cli.build_parser().parse_args,
        "breachmatch-ingest": ingest_cli.parse_args,
        "breachmatch-matcher": matcher_cli.build_parser().parse_args,
        "breachmatch-notifier": notifier_cli.build_parser().parse_args,
    }


def readme_commands() -> list[str]:
    """The commands of the README's code blocks: continuation lines joined, comments and
    the `...` that stands for "your other flags" dropped."""
    commands: list[str] = []
    in_block = False
    pending = ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        text = pending + line.split(" #", 1)[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        words = text.split(maxsplit=1)
        if words and (words[0] in _PROGRAMS or words[0] == "make"):
            commands.append(text.replace(" ...", ""))
    return commands


_PROGRAMS = ("breachmatch", "breachmatch-ingest", "breachmatch-matcher", "breachmatch-notifier")
_MAKE_TARGET = re.compile(r"^([a-z][a-z-]*):", re.MULTILINE)


def test_the_readme_shows_commands_of_every_program() -> None:
    programs = {command.split()[0] for command in readme_commands()}
    assert programs == {*_PROGRAMS, "make"}


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_accepted(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    program, *argv = shlex.split(command)
    if program == "make":
        targets = set(_MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
        assert set(argv) <= targets, command
        return
    # The reader's shell, not ours: no setting of this machine may fill in a flag.
    for name in [n for n in os.environ if n.startswith(("BREACHMATCH_", "OTEL_"))]:
        monkeypatch.delenv(name)
    try:
        _parsers()[program](argv)
    except SystemExit as refused:
        pytest.fail(f"{program} refuses the README's {command!r} (exit {refused.code})")


def test_every_make_target_the_readme_names_exists() -> None:
    """Inline mentions too (`make bench-check`, ...), not only the code blocks."""
    named = set(re.findall(r"`make ([a-z][a-z-]*)", README.read_text()))
    targets = set(_MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
    assert len(named) >= 10
    assert named - targets == set()
