"""Dumps damaged the way real ones are: every row accounted for, every patient still found.

Issue 15's table, rebuilt from a generated 1,002-row ``;`` leak
(`breachmatch_dev.synthetic`, 600 leaked patients) damaged by
`breachmatch_dev.damage`, which says per row what a correct reader yields.
Each case demands that exactly, row by row (identifiers and categories of
every record, reason and salvage of every bad row), that the counts add up
to the rows in the file, and — for the leak itself — that matching the
hospital's patients against what was read (in plaintext, as the PSI would)
gives exactly the generator's ground truth: the right patients, keys,
strengths and categories.

What the same damage did before (issue 15): a stray quote swallowed 544 rows
(274 of 600 matches found); an unquoted ``;`` in the address kept 274 rows
with shifted columns (172 matches with wrong categories) and dropped 229;
in the last column it dropped 454 rows; CR-only endings sniffed ``,``; one
NUL rejected the file; a cut first line made a JSON-lines file unreadable.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, ReaderError, ReadStats, open_records
from breachmatch.readers.salvage import salvage
from breachmatch.records import Category, PersonRecord
from breachmatch_dev import damage
from breachmatch_dev.demo import Match, expected_matches
from breachmatch_dev.dumps import Dataset, write_dataset

Item = PersonRecord | BadRow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_dataset(tmp_path_factory.mktemp("leak"), fillers=True)


@pytest.fixture(scope="module")
def leak(dataset: Dataset) -> damage.Leak:
    return damage.Leak.read(dataset.leak)


def _read(data: bytes, format: str = "auto") -> tuple[list[Item], ReadStats, str]:
    with open_records(io.BytesIO(data), format) as stream:
        items = list(stream)
        return items, stream.stats, stream.format


def _keys(record: PersonRecord | None) -> set[tuple[str, bytes]]:
    if record is None:
        return set()
    return {(key.kind.value, key.oprf_input()) for key in match_keys(record).keys}


def _assert_rows(items: list[Item], damaged: damage.Damaged) -> None:
    """Item i is row i: a record with the expected keys and categories, or the expected bad row."""
    assert len(items) == len(damaged.outcomes)
    for row, (item, expected) in enumerate(zip(items, damaged.outcomes, strict=True), start=1):
        if expected.kind == "bad":
            assert isinstance(item, BadRow), row
            assert (item.reason, item.row) == (expected.code, row)
            assert _keys(item.salvaged) == _keys(expected.record), row
            if expected.record is not None:
                assert item.salvaged is not None
                assert item.salvaged.categories == expected.record.categories
        else:
            assert isinstance(item, PersonRecord), (row, item)
            assert expected.record is not None
            assert _keys(item) == _keys(expected.record), row
            assert item.categories == expected.record.categories, row


def _assert_counts(stats: ReadStats, damaged: damage.Damaged) -> None:
    """rows read = clean + repaired + bad, each exactly as the damage predicts."""
    assert stats.rows_read == len(damaged.outcomes)
    assert dict(stats.repaired) == damaged.count("repaired")
    assert dict(stats.bad_rows) == damaged.count("bad")
    assert stats.clean_rows == sum(o.kind == "clean" for o in damaged.outcomes)
    assert stats.salvaged == sum(o.kind == "bad" and o.record is not None for o in damaged.outcomes)


def _hospital(dataset: Dataset) -> dict[str, set[tuple[str, bytes]]]:
    with open_records(dataset.hospital_csv) as stream:
        records, bad = stream.read_all()
    assert not bad
    return {r.patient_id: _keys(r) for r in records if r.patient_id}


def _matches(items: list[Item], dataset: Dataset) -> set[Match]:
    """What PSI tells the hospital, computed in plaintext: per patient, keys found and labels."""
    labels: dict[bytes, Category] = {}
    for item in items:
        record = item.salvaged if isinstance(item, BadRow) else item
        for _, token in _keys(record):
            labels[token] = labels.get(token, Category(0)) | record.categories  # type: ignore[union-attr]
    found: set[Match] = set()
    for patient, keys in _hospital(dataset).items():
        hits = {(kind, token) for kind, token in keys if token in labels}
        if not hits:
            continue
        categories = Category(0)
        for _, token in hits:
            categories |= labels[token]
        kinds = tuple(sorted({kind for kind, _ in hits}))
        strength = "strong" if "cpr" in kinds else "medium"
        found.add((patient, strength, kinds, tuple(sorted(categories.names()))))
    return found


CSV_DAMAGE: dict[str, Callable[[damage.Leak], damage.Damaged]] = {
    "one unbalanced quote at data row 10": lambda leak: damage.stray_quote(leak, row=10),
    "unquoted ; in a middle column (the address)": lambda leak: damage.delimiter_in(
        leak, "Adresse"
    ),
    "unquoted ; in the last column (the note)": lambda leak: damage.delimiter_in(leak, "Notat"),
    "unquoted ; in a free-text column mid-row (the referral)": lambda leak: damage.delimiter_in(
        leak, "Henvisning"
    ),
    "unquoted ; in the diagnosis": lambda leak: damage.delimiter_in(leak, "Diagnose"),
    "trailing empty cells left out": damage.short_rows,
    "CR-only line endings": damage.cr_only,
    "one NUL byte in the first 64 KiB": damage.nul_byte,
}


def test_the_clean_leak_reads_as_the_generator_wrote_it(
    leak: damage.Leak, dataset: Dataset
) -> None:
    data = dataset.leak.read_bytes()
    items, stats, _ = _read(data)
    clean = damage.Damaged("clean", data, damage.baseline(leak))
    _assert_rows(items, clean)
    _assert_counts(stats, clean)
    assert _matches(items, dataset) == expected_matches(dataset)
    assert len(expected_matches(dataset)) == 600


@pytest.mark.parametrize("name", list(CSV_DAMAGE))
def test_damaged_csv_finds_exactly_the_expected_patients(
    name: str, leak: damage.Leak, dataset: Dataset
) -> None:
    damaged = CSV_DAMAGE[name](leak)
    items, stats, fmt = _read(damaged.data)
    assert fmt == "csv"
    _assert_rows(items, damaged)
    _assert_counts(stats, damaged)
    assert _matches(items, dataset) == expected_matches(dataset)


def test_the_damage_reaches_the_rows_it_claims(leak: damage.Leak) -> None:
    """The cases above test something: each damages every row it can (hundreds, as in issue 15)."""

    def spaced(header: str) -> int:
        column, width = leak.headers.index(header), len(leak.headers)
        return sum(len(cells) == width and " " in cells[column] for cells in leak.rows)

    assert damage.stray_quote(leak).count("repaired")["csv_stray_quote"] == 1
    for header in ("Adresse", "Notat"):
        damaged = damage.delimiter_in(leak, header).count("repaired")["csv_overflow_joined"]
        assert damaged == spaced(header) > 400
    assert damage.short_rows(leak).count("repaired")["csv_short_row_padded"] > 500
    assert b"\r\n" not in damage.cr_only(leak).data
    assert damage.nul_byte(leak).data.index(b"\x00") < 64 * 1024


def test_a_middle_column_overflow_is_never_kept_shifted(leak: damage.Leak) -> None:
    """Rows whose note is empty end in an empty cell once the address is cut: not trailing junk."""
    damaged = damage.delimiter_in(leak, "Adresse")
    column = leak.headers.index("Notat")
    shifted = [i for i, o in enumerate(damaged.outcomes) if o.code == "csv_overflow_joined"]
    empty_note = [i for i in shifted if not leak.rows[i][column]]
    assert len(empty_note) > 200  # the rows the old reader trimmed and kept with shifted columns
    items, _, _ = _read(damaged.data)
    for i in empty_note:
        item = items[i]
        assert isinstance(item, PersonRecord)
        assert not item.categories & Category.FREE_TEXT
        assert item.address is not None
        assert ";" in item.address


def test_json_lines_whose_first_line_is_cut_are_still_json_lines(leak: damage.Leak) -> None:
    damaged = damage.jsonl_cut_first_line(leak, lambda cells: salvage(cells))
    items, stats, fmt = _read(damaged.data)
    assert fmt == "jsonl"
    _assert_rows(items, damaged)
    _assert_counts(stats, damaged)
    assert stats.rows_read == 200


def test_a_json_integer_of_5000_digits_is_a_value_not_the_end(leak: damage.Leak) -> None:
    damaged = damage.json_long_integer(leak)
    items, stats, fmt = _read(damaged.data)
    assert fmt == "json"
    _assert_rows(items, damaged)
    _assert_counts(stats, damaged)


def _leak_zip(build: Callable[[bytes], bytes], dataset: Dataset) -> bytes:
    return build(dataset.leak.read_bytes())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (damage.zip_unsupported_version, "zip version this reader does not support"),
        (damage.zip_bad_utf8_name, "member name marked UTF-8 that is not"),
    ],
)
def test_zip_archives_zipfile_cannot_describe_are_refused_with_a_message(
    build: Callable[[bytes], bytes], message: str, dataset: Dataset
) -> None:
    with pytest.raises(ReaderError, match=message):
        open_records(io.BytesIO(_leak_zip(build, dataset)))


def test_a_zip_member_without_a_name_is_read(leak: damage.Leak, dataset: Dataset) -> None:
    with open_records(io.BytesIO(_leak_zip(damage.zip_empty_member_name, dataset))) as stream:
        items = list(stream)
        assert [m.name for m in stream.members] == ["(unnamed member)"]
    _assert_rows(items, damage.Damaged("clean", b"", damage.baseline(leak)))


def _bad_rows(items: Iterator[Item]) -> list[BadRow]:
    return [item for item in items if isinstance(item, BadRow)]


def test_unattributable_rows_are_bad_but_keep_what_their_values_show() -> None:
    """Rows no reading explains better than another are bad, never kept with a guess.

    Row 61: "astma; kronisk" cut in the diagnosis, or a diagnosis "astma" and
    a note "kronisk" with a trailing delimiter? Both look like their columns,
    and they disagree on the categories. Row 62: every reading puts an
    invalid value in the CPR or e-mail column.
    """
    rows = ["Navn;CPR-nr.;E-mail;Diagnose;Notat"]
    rows += [
        f"Person {i};{i % 28 + 1:02d}0180-{1000 + i};p{i}@example.dk;"
        + ("astma;ok" if i % 2 else "astma kronisk;ses igen")
        for i in range(60)
    ]
    rows.append("Ane Bo;010190-1234;ane@example.dk;astma; kronisk;")
    rows.append("Bo Ane;0202901234;x;y;z;w")
    items, stats, _ = _read("\n".join(rows).encode())
    bad = _bad_rows(iter(items))
    assert [(b.reason, b.row) for b in bad] == [
        ("csv_wrong_field_count", 61),
        ("csv_wrong_field_count", 62),
    ]
    first, second = bad
    assert first.salvaged is not None
    assert (first.salvaged.cpr, first.salvaged.email) == ("010190-1234", "ane@example.dk")
    assert first.salvaged.categories == Category.NATIONAL_ID | Category.CONTACT
    assert second.salvaged is not None
    assert (second.salvaged.cpr, second.salvaged.email) == ("0202901234", None)
    assert stats.salvaged == 2
    assert "010190-1234" not in repr(first)


def test_two_different_cprs_in_a_bad_row_salvage_no_cpr() -> None:
    assert salvage(["0101801234", "0202802345", "a@example.dk"]) == PersonRecord(
        email="a@example.dk", categories=Category.CONTACT
    )
    assert salvage(["0101801234", "010180-1234"]) == PersonRecord(
        cpr="0101801234", categories=Category.NATIONAL_ID
    )
    assert salvage(["0000000000", "kun tekst", "12345678"]) is None


def test_damage_knows_the_leak_headers(dataset: Dataset, tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_bytes(dataset.leak.read_bytes().replace(b"Notat", b"Fritekst", 1))
    with pytest.raises(ValueError, match="Fritekst"):
        damage.Leak.read(odd)
