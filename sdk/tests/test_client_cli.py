"""The CLI's surface: every flag has an environment fallback, and usage errors say which."""

from __future__ import annotations

import argparse
import logging
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from breachmatch import cli
from breachmatch.cli import build_parser, main
from breachmatch.settings import env_variable
from breachmatch_dev import DevPki


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
    assert set(commands) == {"check", "watch", "notify", "status", "certificate", "inspect"}
    certificate = _subparsers(commands.pop("certificate"))
    assert set(certificate) == {"request", "install"}
    commands |= {f"certificate {action}": parser for action, parser in certificate.items()}
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                flag = max(action.option_strings, key=len)
                variable = "BREACHMATCH_" + flag.lstrip("-").replace("-", "_").upper()
                if (env_variable(action) or "").startswith("OTEL_"):
                    variable = str(env_variable(action))  # the standard OpenTelemetry names
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


def _zip_needing_a_newer_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("patients.csv", "patient_id;cpr\nP1;0101801234\n")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, raw.index(b"PK\x01\x02") + 6, 99)  # version needed: 9.9
    path.write_bytes(bytes(raw))
    return path


def test_an_export_that_cannot_be_opened_is_one_line_and_exit_1(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    """As a real process: the message, and no traceback."""
    patients = _zip_needing_a_newer_zip(tmp_path / "patients.zip")
    done = subprocess.run(
        [sys.executable, "-m", "breachmatch.cli", "check", "--patients", str(patients),
         "--tls-dir", str(dev_pki.tenant_dir("hospital-a")), "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "needs a zip version this reader does not support" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_encoding_names_the_flag(
    dev_pki: DevPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id;cpr\nP1;0101801234\n")
    argv = ["check", "--patients", str(patients), "--encoding", "klingon"]
    argv += ["--tls-dir", str(dev_pki.tenant_dir("hospital-a")), "--state-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:  # a bad flag value is wrong usage
        main(argv)
    assert exited.value.code == 2
    assert "unknown encoding 'klingon' (--encoding)" in capsys.readouterr().err


def test_a_bug_is_one_line_and_exit_70_with_a_scrubbed_traceback_under_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object) -> None:
        raise KeyError("patient 0101801234 / anne@example.dk")

    monkeypatch.setitem(cli._COMMANDS, "status", broken)
    assert main(["status"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: unexpected KeyError at broken" in err
    assert "Traceback" not in err
    assert "0101801234" not in err
    assert main(["--debug", "status"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "0101801234" not in err
    assert "anne@example.dk" not in err


EXPORT = (
    "Patientnr;CPR-nr.;Fornavn;Efternavn;Fødselsdato;E-mail;Telefon\n"
    "A1;010180-1234;Anne;Berg;01-01-1980;anne@example.dk;+45 21 34 56 78\n"
    "A2;0000000000;Bo;Dahl;31-02-1980;ukendt;12\n"
    ";321399-9999;;;;;\n"
    "kun;to\n"
)
VALUES = ("010180-1234", "0101801234", "anne@example.dk", "21 34 56 78", "Anne", "Berg")


def test_inspect_counts_keys_and_rejected_values_but_never_shows_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    export = tmp_path / "export.csv"
    export.write_text(EXPORT, encoding="utf-8")
    report = tmp_path / "inspect.json"
    assert main(["inspect", "--patients", str(export), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "CPR-nr." in out
    assert "keys        cpr 1  email 1  phone 1  name_dob 1" in out
    for rejected in ("cpr: placeholder 1", "cpr: cpr_bad_date 1", "name_dob: dob_bad_date 1"):
        assert rejected in out
    assert "email: placeholder 1" in out
    assert "phone: phone_length 1" in out
    assert "csv_wrong_field_count 1" in out
    assert "1 row(s) without a patient id" in out
    assert "ready      1 of 4 rows give at least one match key" in out
    written = report.read_text()
    for value in VALUES:
        assert value not in out
        assert value not in written
    assert '"rows_without_keys": 2' in written


def test_inspect_of_an_export_without_keys_exits_1_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    export = tmp_path / "export.csv"
    export.write_text("Kode,Note\nX1,hej\n", encoding="utf-8")
    assert main(["inspect", "--patients", str(export)]) == 1
    assert "gives a usable match key" in capsys.readouterr().err
    assert main(["inspect", "--patients", str(tmp_path / "absent.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
