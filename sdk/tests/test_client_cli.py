"""The CLI's surface: every flag has an environment fallback, and usage errors say which."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from breachmatch.cli import build_parser, main


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """`main` configures logging for its process; give pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_flag_of_every_command_names_its_environment_variable():
    commands = _subparsers(build_parser())
    assert set(commands) == {"check", "watch", "notify", "status"}
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                flag = max(action.option_strings, key=len)
                variable = "BREACHMATCH_" + flag.lstrip("-").replace("-", "_").upper()
                assert f"(env {variable}" in (action.help or ""), (name, flag)


def test_environment_supplies_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("BREACHMATCH_PATIENTS", str(tmp_path / "p.csv"))
    monkeypatch.setenv("BREACHMATCH_BATCH_SIZE", "77")
    monkeypatch.setenv("BREACHMATCH_QUIET", "yes")
    args = build_parser().parse_args(["check"])
    assert args.patients == tmp_path / "p.csv"
    assert args.batch_size == 77
    assert args.quiet is True
    flag_wins = build_parser().parse_args(["check", "--batch-size", "5"])
    assert flag_wins.batch_size == 5


def test_missing_required_settings_are_usage_errors(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["notify", "--tls-dir", "/nowhere"])
    assert exited.value.code == 2
    assert "--from is required (or set BREACHMATCH_FROM)" in capsys.readouterr().err


def test_unknown_channel_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    argv = ["notify", "--from", "r.json", "--tls-dir", "x", "--notifier", "h:1"]
    with pytest.raises(SystemExit):
        main([*argv, "--channels", "email,pigeon"])
    err = capsys.readouterr().err
    assert "argument --channels: takes a list from email, sms, digital_post, dry_run" in err


def test_problems_exit_1_with_the_explanation(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code = main(["check", "--patients", "p.csv", "--tls-dir", str(tmp_path / "none")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"TLS file {tmp_path / 'none' / 'ca.crt'} is missing" in err
    assert "--tls-dir must name a directory" in err
