"""CSV/TSV: delimiters, encodings, quoting, ragged rows, headerless files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from breachmatch.readers import BadRow, RecordStream, open_records
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
