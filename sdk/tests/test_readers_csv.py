"""CSV/TSV: delimiters, encodings, quoting and its damage, ragged rows, headerless files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from breachmatch.readers import BadRow, ReaderError, RecordStream, csv_reader, open_records
from breachmatch.readers.csv_reader import MAX_RECORD_LINES
from breachmatch.records import Category

# Made-up people; the traps are in the spelling, not in the people.
DANISH_HEADER = (
    "Navn;CPR-nr.;Fødselsdato;Telefon;Mobil;E-mail;Adresse;Postnr;By;Journal;Bemærkning;Køn"
)
DANISH_ROWS = [
    "Søren Ærbødig;010180-1234;01-01-1980;+45 12 34 56 78;;SOREN@EXAMPLE.DK;"
    '"Åvej 1; 2. th";8000;Århus;"Besøg 3/1:\nkontrol; ok";;M',
    "ÅSE ØSTERGÅRD;0202902345;1990-02-02;12345678;0045-87654321;ase@example.dk;;;;;;K",
    "Bo Bæk;030303-3456;;;;;;;;;ring efter kl. 16;M",
    "kun;tre;felter",
    "Ida Ild;0404041234;;45 11 22 33 44;;;Idavej 4;5000;Odense;;;K",
]


def _open(data: bytes, format: str = "auto") -> RecordStream:
    return open_records(io.BytesIO(data), format)


def _danish_csv(encoding: str, newline: str = "\r\n") -> bytes:
    return newline.join([DANISH_HEADER, *DANISH_ROWS, ""]).encode(encoding)


def test_cp1252_semicolon_export_with_danish_headers() -> None:
    with _open(_danish_csv("cp1252")) as stream:
        records, bad = stream.read_all()
        assert stream.members[0].encoding == "cp1252"
        assert stream.members[0].delimiter == ";"
        assert stream.format == "csv"
        assert stream.stats.rows_read == 5
        assert stream.stats.bad_rows == {"csv_wrong_field_count": 1}
    assert bad == [BadRow("csv_wrong_field_count", 4, "")]
    soren, ase, bo, ida = records
    assert soren.full_name == "Søren Ærbødig"
    assert soren.cpr == "010180-1234"
    assert soren.birth_date == "01-01-1980"
    assert soren.phone == "+45 12 34 56 78"
    assert soren.email == "SOREN@EXAMPLE.DK"
    assert soren.address == "Åvej 1; 2. th, 8000, Århus"
    assert soren.categories == Category.CONTACT | Category.NATIONAL_ID | Category.MEDICAL_HISTORY
    assert ase.full_name == "ÅSE ØSTERGÅRD"
    assert (ase.phone, ase.extra_phones) == ("12345678", ["0045-87654321"])
    assert ase.cpr == "0202902345"
    assert bo.categories == Category.NATIONAL_ID | Category.FREE_TEXT
    assert bo.phone is None
    assert ida.phone == "45 11 22 33 44"


@pytest.mark.parametrize(("encoding", "sniffed"), [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig")])
def test_utf8_with_and_without_bom(encoding: str, sniffed: str) -> None:
    with _open(_danish_csv(encoding, newline="\n")) as stream:
        records, _ = stream.read_all()
        assert stream.members[0].encoding == sniffed
    assert [r.full_name for r in records][:2] == ["Søren Ærbødig", "ÅSE ØSTERGÅRD"]


def test_latin1_is_chosen_when_cp1252_cannot_be_it() -> None:
    # 0x81 is undefined in cp1252: only latin-1 explains it.
    data = "Navn,Notat\nØrsted,a\x81b\n".encode("latin-1")
    with _open(data) as stream:
        records, _ = stream.read_all()
        assert stream.members[0].encoding == "latin-1"
    assert records[0].full_name == "Ørsted"


def test_bytes_past_the_sample_that_contradict_it_do_not_stop_the_read() -> None:
    filler = "".join(f"Person {i},{i:010d}\n" for i in range(6000))  # > 64 KiB of ASCII
    data = ("Navn,CPR\n" + filler).encode() + "Ærø,0101801234\n".encode("cp1252")
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.members[0].encoding == "utf-8"
    assert not bad
    assert len(records) == 6001
    assert records[-1].cpr == "0101801234"
    assert records[-1].full_name == "\ufffdr\ufffd"  # cp1252 "Æ" and "ø" are not UTF-8


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    rows = [["first_name", "last_name", "ssn", "email"], ["Ann", "Test", "123-45-6789", "a@x.org"]]
    rows.append(["Bob, Jr.", "Te;st", "987-65-4321", "b|c@x.org"])
    text = "\n".join(delimiter.join(f'"{c}"' for c in row) for row in rows) + "\n"
    with _open(text.encode()) as stream:
        records, bad = stream.read_all()
        assert stream.members[0].delimiter == delimiter
    assert not bad
    assert [(r.given_name, r.family_name, r.ssn) for r in records] == [
        ("Ann", "Test", "123-45-6789"),
        ("Bob, Jr.", "Te;st", "987-65-4321"),
    ]


def test_tsv_format_forces_a_tab() -> None:
    with _open(b"name,x\tssn\nA,1\t123-45-6789\n", format="tsv") as stream:
        records, _ = stream.read_all()
        assert stream.members[0].delimiter == "\t"
    assert records[0].full_name is None  # "name,x" is one header that means nothing
    assert records[0].ssn == "123-45-6789"


def test_trailing_delimiters_are_trimmed_but_real_extra_cells_are_bad() -> None:
    data = b"Navn;CPR\nA;0101801234;;\nB;0202802345;extra\n\n   \nC;0303803456\n"
    with _open(data) as stream:
        records, bad = stream.read_all()
    assert [r.full_name for r in records] == ["A", "C"]
    assert bad == [BadRow("csv_wrong_field_count", 2, "")]


def test_file_without_a_header_row_gets_positional_columns() -> None:
    data = b"Anne Test,010180-1234,anne@example.dk\nBo Test,020280-2345,bo@example.dk\n"
    with _open(data) as stream:
        records, _ = stream.read_all()
        assert [plan.decisions[0].header for plan in stream.plans_seen.values()] == ["column_1"]
    assert len(records) == 2  # the first row is data, not a header
    assert all(r.cpr is None and r.categories == Category(0) for r in records)


def test_malformed_quoting_is_read_literally_counted_and_reading_goes_on() -> None:
    data = b'Navn,CPR\n"A"x,0101801234\nB,0202802345\n"C,0303803456\n'
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.stats.repaired == {"csv_stray_quote": 2}
        assert stream.stats.rows_read == 3
    assert not bad
    assert [(r.full_name, r.cpr) for r in records] == [
        ('"A"x', "0101801234"),
        ("B", "0202802345"),
        ("C", "0303803456"),
    ]


def test_path_source_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    data = _danish_csv("cp1252")
    path.write_bytes(data)
    with open_records(path) as stream:
        assert stream.total_bytes == len(data)
        stream.read_all()
        assert stream.bytes_read == len(data)


def test_a_stray_quote_swallows_no_row() -> None:
    """The csv module would read one field up to the next quote; every row is read instead."""
    rows = [f"P{i};{i % 28 + 1:02d}0180{1000 + i};p{i}@example.dk" for i in range(40)]
    rows[9] = '"' + rows[9]
    data = ("Navn;CPR;E-mail\n" + "\n".join(rows) + '\n"Q";0101801234;q@example.dk\n').encode()
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.stats.rows_read == 41
        assert stream.stats.repaired == {"csv_stray_quote": 1}
    assert not bad
    assert [r.full_name for r in records] == [f"P{i}" for i in range(40)] + ["Q"]
    assert records[9].email == "p9@example.dk"


def test_a_quoted_field_spanning_too_many_lines_is_a_stray_quote() -> None:
    """Lines without a delimiter never look like rows, so the line limit decides."""
    lines = ["Notat,CPR", '"start,0101801234'] + ["tekst"] * (MAX_RECORD_LINES + 20)
    with _open("\n".join(lines).encode()) as stream:
        records, bad = stream.read_all()
        assert stream.stats.rows_read == 1 + MAX_RECORD_LINES + 20
        assert stream.stats.repaired["csv_stray_quote"] == 1
    assert records[0].cpr == "0101801234"
    assert not bad


def test_real_multi_line_quoted_fields_are_one_row() -> None:
    note = '"Linje 1; med semikolon\nLinje 2\n\nLinje 4"'
    data = f"Navn;Notat;CPR\nA;{note};0101801234\nB;kort;0202802345\n".encode()
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.stats.rows_read == 2
        assert not stream.stats.repaired
    assert not bad
    assert [r.cpr for r in records] == ["0101801234", "0202802345"]
    assert records[0].categories == Category.NATIONAL_ID | Category.FREE_TEXT


def test_a_quote_opened_at_the_end_of_the_input_is_literal() -> None:
    with _open(b'Navn;CPR\nA;0101801234\n"B;0202802345') as stream:
        records, bad = stream.read_all()
        assert stream.stats.repaired == {"csv_stray_quote": 1}
    assert not bad
    assert [(r.full_name, r.cpr) for r in records] == [
        ("A", "0101801234"),
        ("B", "0202802345"),
    ]


def test_nul_bytes_are_damage_in_their_row_only() -> None:
    data = b"Navn;CPR\nA;01018\x0001234\nB;0202802345\n"
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.format == "csv"
        assert stream.stats.repaired == {"csv_nul_removed": 1}
    assert not bad
    assert [r.cpr for r in records] == ["0101801234", "0202802345"]


def test_lines_longer_than_the_window_are_bad_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_reader, "MAX_UNIT_CHARS", 64)
    data = b"Navn;CPR\nA;0101801234\n" + b"x" * 200 + b"\nB;0202802345\n"
    with _open(data, format="csv") as stream:
        records, bad = stream.read_all()
    assert [r.full_name for r in records] == ["A", "B"]
    assert bad == [BadRow("csv_line_too_long", 2, "")]


def test_short_rows_are_padded_when_every_cell_is_at_home() -> None:
    rows = [f"P{i};{i % 28 + 1:02d}0180{1000 + i};p{i}@example.dk;Pinex" for i in range(30)]
    rows += ["Kort;0303803456", "Kortere"]
    with _open(("Navn;CPR;E-mail;Medicin\n" + "\n".join(rows)).encode()) as stream:
        records, bad = stream.read_all()
        assert stream.stats.repaired == {"csv_short_row_padded": 2}
    assert not bad
    assert (records[-2].cpr, records[-2].categories) == ("0303803456", Category.NATIONAL_ID)
    assert records[-1].full_name == "Kortere"


def test_trailing_delimiters_on_every_row_are_the_exporters_habit() -> None:
    rows = [f"P{i};{i % 28 + 1:02d}0180{1000 + i};" for i in range(30)]
    with _open(("Navn;CPR\n" + "\n".join(rows)).encode()) as stream:
        records, bad = stream.read_all()
        assert stream.stats.repaired == {"csv_empty_overflow_dropped": 30}
    assert not bad
    assert [r.full_name for r in records] == [f"P{i}" for i in range(30)]


def test_cr_only_line_endings_keep_their_delimiter() -> None:
    with _open(_danish_csv("cp1252", newline="\r")) as stream:
        records, bad = stream.read_all()
        assert stream.members[0].delimiter == ";"
    assert [r.cpr for r in records] == ["010180-1234", "0202902345", "030303-3456", "0404041234"]
    assert [b.reason for b in bad] == ["csv_wrong_field_count"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom(encoding: str) -> None:
    with _open(_danish_csv(encoding)) as stream:
        records, _ = stream.read_all()
        assert stream.members[0].encoding == encoding
    assert records[0].full_name == "Søren Ærbødig"


def test_the_encoding_can_be_overridden() -> None:
    data = "Navn;CPR\nSøren;0101801234\n".encode()
    with open_records(io.BytesIO(data), encoding="cp1252") as stream:
        records, _ = stream.read_all()
        assert stream.members[0].encoding == "cp1252"
    assert records[0].full_name == "SÃ¸ren"
    with pytest.raises(ReaderError, match="unknown encoding 'klingon'"):
        open_records(io.BytesIO(data), encoding="klingon")
    with pytest.raises(ReaderError, match="not a text encoding"):
        open_records(io.BytesIO(data), encoding="hex")
