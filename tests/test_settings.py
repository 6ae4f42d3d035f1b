"""Every setting of every command refuses a bad value, from a flag or from the environment.

The settings are found by walking the real parsers (`breachmatch.settings`
records which variable feeds each flag), so a setting added later is covered
without touching this file — unless it takes free text, which must then be
listed in `FREE_TEXT` on purpose.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from breachmatch import bus
from breachmatch import cli as hospital_cli
from breachmatch.settings import (
    env_variable,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_seconds,
)
from breachmatch_dev import DevPki
from breachmatch_ingest import cli as ingest_cli
from breachmatch_matcher import cli as matcher_cli
from breachmatch_notifier import cli as notifier_cli

Main = Callable[[Sequence[str] | None], int]

PROGRAMS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Main]] = {
    "breachmatch": (hospital_cli.build_parser, hospital_cli.main),
    "breachmatch-ingest": (ingest_cli.build_parser, ingest_cli.main),
    "breachmatch-matcher": (matcher_cli.build_parser, matcher_cli.main),
    "breachmatch-notifier": (notifier_cli.build_parser, notifier_cli.main),
}

#: Settings whose value is a name, a title or a path: nothing to refuse when parsing.
#: (Files are checked when they are read, before anything connects.)
FREE_TEXT = frozenset(
    {
        # paths read at start-up
        "BREACHMATCH_TLS_DIR",
        "BREACHMATCH_OPRF_KEY_DIR",
        "BREACHMATCH_SIGNING_KEY",
        "BREACHMATCH_VERIFY_KEY",
        "BREACHMATCH_NOTIFIER_STATEMENT",
        "BREACHMATCH_NOTIFIER_SECRET_KEY",
        "BREACHMATCH_TENANTS_FILE",
        "BREACHMATCH_NOTIFIER_TEMPLATE_DIR",
        "BREACHMATCH_MAP",
        "BREACHMATCH_PATIENTS",
        "BREACHMATCH_FROM",
        "BREACHMATCH_OPERATOR_KEY",
        "BREACHMATCH_NOTIFIER_KEY",
        "BREACHMATCH_CA_DIR",
        # paths written or created
        "BREACHMATCH_STATE_DIR",
        "BREACHMATCH_CACHE_KEY",
        "BREACHMATCH_CACHE_DIR",
        "BREACHMATCH_JSON",
        "BREACHMATCH_CSV",
        "BREACHMATCH_JSON_REPORT",
        "BREACHMATCH_OUT_DIR",
        # text shown to people, ids
        "BREACHMATCH_TITLE",
        "BREACHMATCH_ORGANISATION",
        "BREACHMATCH_DESCRIPTION_DA",
        "BREACHMATCH_DESCRIPTION_EN",
        "BREACHMATCH_REASON",
        "BREACHMATCH_BREACH_ID",
        "BREACHMATCH_TENANT",  # checked as a certificate name when the request is made
        "BREACHMATCH_BREACH",
        "BREACHMATCH_FACILITY",
        "BREACHMATCH_NOTIFIER_FALLBACK_LANGUAGE",
        # an ISO date, parsed with the breach metadata (exit 2 there)
        "BREACHMATCH_BREACH_DATE",
    }
)
BAD = "maybe-not"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[argparse.Action]]]:
    """Each runnable command path with the actions of every parser along it.

    A command's required positional arguments get a placeholder: without one,
    argparse stops at the missing argument before it checks the environment
    values of the parsers above (``breachmatch --debug`` of ``certificate install``).
    """
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    own = [a for a in parser._actions if env_variable(a)]
    if not subcommands:
        positionals = [a for a in parser._actions if not a.option_strings and a.required]
        yield (*path, *("ARG" for _ in positionals)), own
        return
    for name, sub in subcommands[0].choices.items():
        for subpath, actions in _commands(sub, (*path, name)):
            yield subpath, own + actions


def _settings() -> Iterator[tuple[str, tuple[str, ...], argparse.Action]]:
    for program, (build, _) in PROGRAMS.items():
        for path, actions in _commands(build()):
            for action in actions:
                yield program, path, action


SETTINGS = list(_settings())


def _id(program: str, path: tuple[str, ...], action: argparse.Action) -> str:
    return f"{program} {' '.join(path)} {action.option_strings[0]}"


CHECKED = [
    pytest.param(program, path, env_variable(action), id=_id(program, path, action))
    for program, path, action in SETTINGS
    if env_variable(action) not in FREE_TEXT
]
#: Settings given as a flag with a value (switches take none: nothing to get wrong).
CHECKED_FLAGS = [
    pytest.param(program, path, action.option_strings[0], id=_id(program, path, action))
    for program, path, action in SETTINGS
    if env_variable(action) not in FREE_TEXT and action.nargs != 0
]
RANGES: dict[object, str] = {
    positive_int: "0",
    positive_seconds: "0",
    non_negative_int: "-1",
    non_negative_number: "-1",
}
RANGED = [
    pytest.param(
        program, path, action.option_strings[0], RANGES[action.type], id=_id(program, path, action)
    )
    for program, path, action in SETTINGS
    if action.type in RANGES
]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("BREACHMATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a command that gets through (certificate request) writes here


def _exit_status(program: str, argv: list[str]) -> int:
    _, main = PROGRAMS[program]
    try:
        return main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)


def test_the_walk_finds_every_program_and_the_known_settings() -> None:
    variables = {env_variable(action) for _, _, action in SETTINGS}
    assert {program for program, _, _ in SETTINGS} == set(PROGRAMS)
    assert {
        "BREACHMATCH_RETRIES",
        "BREACHMATCH_LOG_LEVEL",
        "BREACHMATCH_MAX_BATCH",
        "BREACHMATCH_QUIET",
        "BREACHMATCH_BATCH_SIZE",
        "BREACHMATCH_NATS_URL",
        "BREACHMATCH_NATS_TLS_DIR",
        "BREACHMATCH_CONNECT_TIMEOUT",
        "BREACHMATCH_NOTIFIER_BACKOFF",
    } <= variables
    assert variables >= FREE_TEXT, "a FREE_TEXT entry no command has any more"


@pytest.mark.parametrize(("program", "path", "variable"), CHECKED)
def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    program: str,
    path: tuple[str, ...],
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, BAD)
    assert _exit_status(program, list(path)) == 2
    err = capsys.readouterr().err
    assert f"{variable}='{BAD}'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("program", "path", "flag"), CHECKED_FLAGS)
def test_a_bad_flag_value_is_a_usage_error(
    program: str, path: tuple[str, ...], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_status(program, [*path, flag, BAD]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("program", "path", "flag", "value"), RANGED)
def test_numbers_out_of_range_are_usage_errors(
    program: str,
    path: tuple[str, ...],
    flag: str,
    value: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _exit_status(program, [*path, flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err
    assert "must" in err


def test_a_flag_beats_a_bad_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The variable is only read when the flag is absent, so a flag can override a bad env."""
    monkeypatch.setenv("BREACHMATCH_BATCH_SIZE", BAD)
    args = hospital_cli.build_parser().parse_args(["check", "--batch-size", "7"])
    assert args.batch_size == 7


@pytest.mark.parametrize("program", ["breachmatch-matcher", "breachmatch-notifier"])
def test_a_nats_certificate_directory_must_hold_its_three_files(
    program: str, tmp_path: Path, dev_pki: DevPki, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--nats-tls-dir`` is the identity NATS maps to a user: an incomplete directory is
    a usage error naming what is missing, before anything connects."""
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "ca.crt").write_bytes((dev_pki.service_dir("matcher") / "ca.crt").read_bytes())
    assert _exit_status(program, ["serve", "--nats-tls-dir", str(incomplete)]) == 2
    assert "argument --nats-tls-dir: directory lacks tls.crt, tls.key" in capsys.readouterr().err
    build, _ = PROGRAMS[program]
    complete = dev_pki.service_dir("matcher")
    assert build().parse_args(["serve", "--nats-tls-dir", str(complete)]).nats_tls_dir == complete


@pytest.mark.parametrize(
    ("word", "expected"), [("yes", True), ("ON", True), ("1", True), ("no", False), ("off", False)]
)
def test_switch_words(word: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREACHMATCH_QUIET", word)
    assert hospital_cli.build_parser().parse_args(["status"]).quiet is expected


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREACHMATCH_LOG_LEVEL", "debug")
    assert hospital_cli.build_parser().parse_args(["status"]).log_level == "DEBUG"


@pytest.mark.parametrize("value", ["three", "0", "7", "-1"])
def test_a_bad_stream_replica_count_is_refused_before_any_stream_is_made(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BREACHMATCH_NATS_REPLICAS is read where streams are declared, not by a parser;
    it is checked there, and services report the ValueError as a configuration error."""
    monkeypatch.setenv("BREACHMATCH_NATS_REPLICAS", value)
    with pytest.raises(ValueError, match="BREACHMATCH_NATS_REPLICAS"):
        bus.STREAMS[bus.STREAM_BREACHES].config()
