"""``breachmatch-ingest`` on damaged dumps, against a real nats-server: nothing lost, no traceback.

The generated 1,002-row leak (`breachmatch_dev.synthetic`), damaged the way
issue 15 found real dumps (`breachmatch_dev.damage`), goes through the CLI
as a process: the published filter must be byte-identical to the one built
from the rows' expected records, and the report must count the repairs. A
dump that cannot be opened at all (a zip ``zipfile`` cannot describe) ends in
one line and exit code 2; a bug ends in one line and exit code 70, with the
traceback — scrubbed of identifiers — only under ``--debug``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from breachmatch_dev import damage
from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_ingest import cli as ingest_cli

from .conftest import Cli, Kit, expected_body, published

on_session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("leak"), fillers=True)


@pytest.fixture(scope="module")
def leak(dataset: Dataset) -> damage.Leak:
    return damage.Leak.read(dataset.leak)


DAMAGE: dict[str, Callable[[damage.Leak], damage.Damaged]] = {
    "stray-quote": damage.stray_quote,
    "address-delimiter": lambda leak: damage.delimiter_in(leak, "Adresse"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
@on_session_loop
async def test_damaged_leak_publishes_exactly_the_expected_filter(
    name: str,
    leak: damage.Leak,
    cli: Cli,
    js: JetStreamContext,
    kit: Kit,
    breach_id: str,
    tmp_path: Path,
) -> None:
    damaged = DAMAGE[name](leak)
    dump = tmp_path / "leak.csv"
    dump.write_bytes(damaged.data)
    report_file = tmp_path / "report.json"
    done = await cli.ingest(dump, breach_id, "--json-report", str(report_file))

    records = [o.record for o in damaged.outcomes if o.record is not None]
    found = await published(js, breach_id, kit)
    assert found.body == expected_body(records, kit.secret)
    report = json.loads(report_file.read_text())
    assert report["rows_read"] == len(damaged.outcomes) == 1002
    assert report["repaired_rows"] == damaged.count("repaired")
    assert report["bad_rows"] == {}
    assert report["salvaged_rows"] == 0
    for repair in damaged.count("repaired"):
        assert repair in done.stdout
    assert "Traceback" not in done.output


@on_session_loop
async def test_inspect_shows_repaired_rows(leak: damage.Leak, cli: Cli, tmp_path: Path) -> None:
    damaged = damage.delimiter_in(leak, "Notat")
    dump = tmp_path / "leak.csv"
    dump.write_bytes(damaged.data)
    report_file = tmp_path / "inspect.json"
    done = await cli.run(str(dump), "--inspect", "--json-report", str(report_file))
    assert done.code == 0, done.stderr
    inspected = json.loads(report_file.read_text())
    sampled = damage.Damaged("sample", b"", damaged.outcomes[: inspected["rows_sampled"]])
    assert inspected["rows_sampled"] == 1000  # the sample size
    assert inspected["repaired_rows"] == sampled.count("repaired")
    assert inspected["repaired_rows"]["csv_overflow_joined"] > 400
    assert inspected["bad_rows"] == {}
    assert f"csv_overflow_joined {sampled.count('repaired')['csv_overflow_joined']}" in done.stdout


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (damage.zip_unsupported_version, "needs a zip version this reader does not support"),
        (damage.zip_bad_utf8_name, "member name marked UTF-8 that is not"),
    ],
)
@on_session_loop
async def test_a_zip_that_cannot_be_opened_is_one_line_and_exit_2(
    build: Callable[[bytes], bytes], message: str, dataset: Dataset, cli: Cli, tmp_path: Path
) -> None:
    dump = tmp_path / "leak.zip"
    dump.write_bytes(build(dataset.leak.read_bytes()))
    done = await cli.run(
        str(dump), "--breach-id", "zip-1", "--title", "T", "--organisation", "O", "--workers", "0"
    )
    assert done.code == 2
    assert message in done.stderr
    assert "Traceback" not in done.output


@on_session_loop
async def test_encoding_override_reaches_the_reader(
    dataset: Dataset, cli: Cli, tmp_path: Path
) -> None:
    report_file = tmp_path / "inspect.json"
    done = await cli.run(
        str(dataset.leak), "--inspect", "--encoding", "latin-1", "--json-report",
        str(report_file),
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert json.loads(report_file.read_text())["members"][0]["encoding"] == "iso8859-1"
    unknown = await cli.run(str(dataset.leak), "--inspect", "--encoding", "klingon")
    assert unknown.code == 2
    assert "unknown encoding 'klingon' (--encoding)" in unknown.stderr


@pytest.fixture
def _keep_logging() -> Iterator[None]:
    """`main` configures logging for its process; give pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("_keep_logging")
def test_a_bug_is_one_line_and_exit_70_with_the_traceback_only_under_debug(
    dataset: Dataset, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("row 7: 0101801234 does not parse")

    monkeypatch.setattr(ingest_cli, "inspect", broken)
    argv = [str(dataset.leak), "--inspect", "--nats-url", "nats://127.0.0.1:1"]
    assert ingest_cli.main(argv) == ingest_cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: unexpected RuntimeError at broken" in err
    assert "Traceback" not in err
    assert "0101801234" not in err
    assert ingest_cli.main([*argv, "--debug"]) == ingest_cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "does not parse" in err
    assert "0101801234" not in err
