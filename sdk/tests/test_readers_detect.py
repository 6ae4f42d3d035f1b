"""Format, encoding, delimiter and dialect are decided from content."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from breachmatch.readers import BadRow, ReaderError, open_records
from breachmatch.readers.detect import sniff_delimiter, sniff_format, sniff_sql_dialect
from breachmatch.readers.encoding import sniff_encoding

SAMPLES = {
    "csv": b"Navn;CPR\nA;0101801234\n",
    "json": b'  [\n {"cpr": "0101801234"}\n]',
    "jsonl": b'{"cpr": "0101801234"}\n{"cpr": "0202802345"}\n',
    "fhir": b'{"resourceType": "Patient", "id": "1"}\n',
    "sql": b"-- dump\nINSERT INTO p (cpr) VALUES ('0101801234');\n",
}


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_auto_ignores_a_misleading_extension(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / ("export.csv" if fmt != "csv" else "export.json")
    path.write_bytes(SAMPLES[fmt])
    with open_records(path) as stream:
        assert stream.format == fmt
        assert sum(1 for _ in stream) >= 1


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("", "csv"),
        ('{\n  "patients": []\n}', "json"),
        ('{"a": 1', "json"),  # a first line longer than the sample: a minified document
        ("/*!40101 SET NAMES utf8 */;\n", "sql"),
        ("SET client_encoding = 'UTF8';\n", "sql"),
        ("COPY public.p (a) FROM stdin;\n", "sql"),
        ("Settings,Name\n1,2\n", "csv"),
        ("Drop off;Navn\n", "csv"),
        ("a,b\x00\x01\x02\x03\n", None),
    ],
)
def test_sniff_format(text: str, fmt: str | None) -> None:
    assert sniff_format(text, complete=not text.startswith('{"a"')) == fmt


@pytest.mark.parametrize(
    ("sample", "encoding"),
    [
        (codecs.BOM_UTF8 + b"Navn\n", "utf-8-sig"),
        ("Navn\n".encode("utf-16"), "utf-16"),
        ("Fødselsdato\n".encode(), "utf-8"),
        ("Fødselsdato – €\n".encode("cp1252"), "cp1252"),
        ("Fødselsdato\n".encode("latin-1"), "cp1252"),  # same bytes either way
        (b"Navn\x81\n", "latin-1"),
    ],
)
def test_sniff_encoding(sample: bytes, encoding: str) -> None:
    assert sniff_encoding(sample, complete=True) == encoding


def test_a_utf8_character_cut_by_the_sample_end_is_still_utf8() -> None:
    sample = "Søren".encode()[:2]  # "S" and the first byte of "ø"
    assert sniff_encoding(sample, complete=False) == "utf-8"
    assert sniff_encoding(sample, complete=True) == "cp1252"


def test_delimiter_prefers_consistent_width_over_frequency() -> None:
    sample = "Navn;Adresse\nA;Vej 1, 2. th, 8000\nB;Gade 2, st.\n"
    assert sniff_delimiter(sample) == ";"
    assert sniff_delimiter("single column\nvalue\n") == ","


def test_sql_dialect_markers() -> None:
    assert sniff_sql_dialect("-- PostgreSQL database dump\nSET x = 1;") == "postgresql"
    assert sniff_sql_dialect("-- MySQL dump\nINSERT INTO `p` VALUES (1);") == "mysql"
    assert sniff_sql_dialect("INSERT INTO p VALUES (1);") == "mysql"


def test_binary_input_is_one_bad_row_and_an_unknown_format_an_error(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 10)
    with open_records(path) as stream:
        assert stream.format == "unrecognised"
        assert list(stream) == [BadRow("unrecognised_format", 0, "")]
    with pytest.raises(ReaderError, match="unknown format"):
        open_records(path, format="xlsx")


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"cpr": "0101801234", "na\n{"cpr": "0202802345"}\n{"cpr": "0303803456"}\n', "jsonl"),
        ('me": "x"}\n{"cpr": "0202802345"}\n{"cpr": "0303803456"}\n', "jsonl"),
        (
            '{"resourceType": "Pat\n{"resourceType": "Patient"}\n{"resourceType": "Patient"}\n',
            "fhir",
        ),
        ('{"cpr": 1,\n"x": [\n{"cpr": 2}\n]}\n', "json"),  # one whole line in four: a document
        ('{"a": 1}\r{"a": 2}\r', "jsonl"),
    ],
)
def test_json_lines_are_recognised_from_the_majority_of_lines(text: str, fmt: str) -> None:
    assert sniff_format(text, complete=True) == fmt


def test_cr_only_lines_are_lines_for_the_delimiter() -> None:
    assert sniff_delimiter("Navn;Adresse\rA;Vej 1, 2. th\rB;Gade 2, st.\r") == ";"


def test_a_nul_in_some_rows_is_damage_but_binary_is_still_refused() -> None:
    rows = "".join(f"P{i};{i:010d}\n" for i in range(50))
    assert sniff_format("Navn;CPR\n" + rows.replace("P7;", "P\x007;"), complete=True) == "csv"
    assert sniff_format("a;b\x00\nc\x00\x01;d\x02\n", complete=True) is None


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_sniffed(encoding: str) -> None:
    assert sniff_encoding("Navn;Fødselsdato\n".encode(encoding), complete=True) == encoding
