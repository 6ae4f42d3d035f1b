"""``--inspect``: the mapping and counts on a sample, and never a cell value."""

from __future__ import annotations

import io
import json
from pathlib import Path

from breachmatch.columns import ColumnMapping
from breachmatch.readers import inspect
from breachmatch.records import Category

IDENTIFIERS = ("0101801234", "010180-1234", "anne@example.dk", "Anne Testesen", "+45 11223344")


def _export(rows: int) -> bytes:
    lines = ["Navn;CPR-nr.;E-mail;Telefon;Mobil;Medicin;Intern kode"]
    lines += ["Anne Testesen;010180-1234;anne@example.dk;+45 11223344;;Pinex;X"] * rows
    lines.append("kun;to")
    return "\n".join(lines).encode("cp1252")


def _assert_no_identifier(text: str) -> None:
    for identifier in IDENTIFIERS:
        assert identifier not in text


def test_report_shows_mapping_counts_and_bad_rows() -> None:
    report = inspect(io.BytesIO(_export(5)))
    assert report.sample_complete
    assert report.rows_sampled == 6
    assert report.estimated_rows == 6
    assert [(c.header, c.target, c.source) for c in report.columns] == [
        ("Navn", "full_name", "auto"),
        ("CPR-nr.", "cpr", "auto"),
        ("E-mail", "email", "auto"),
        ("Telefon", "phone", "auto"),
        ("Mobil", "phone", "auto"),
        ("Medicin", "category:medication", "auto"),
        ("Intern kode", "", "unmapped"),
    ]
    assert [c.header for c in report.unmapped] == ["Intern kode"]
    assert report.field_counts["cpr"] == 5
    assert report.field_counts["ssn"] == 0
    assert report.field_counts["extra_phones"] == 0
    assert report.category_counts == {"contact": 5, "national_id": 5, "medication": 5}
    assert report.bad_rows == {"csv_wrong_field_count": 1}
    assert report.members[0].delimiter == ";"
    text = report.render()
    assert "CPR-nr." in text
    assert "category:medication" in text
    assert "csv_wrong_field_count 1" in text
    _assert_no_identifier(text)
    _assert_no_identifier(json.dumps(report.to_dict()))


def test_sample_stops_early_and_estimates_the_total(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(_export(20_000))
    report = inspect(path, sample_rows=100)
    assert report.rows_sampled == 100
    assert not report.sample_complete
    assert report.estimated_rows is not None
    assert report.estimated_rows > 100
    assert "≈" in report.render()


def test_mapping_file_decisions_are_shown(tmp_path: Path) -> None:
    mapping = ColumnMapping.from_document({"columns": {"Intern kode": "mrn", "Mobil": "ignore"}})
    report = inspect(io.BytesIO(_export(2)), mapping=mapping)
    sources = {c.header: (c.target, c.source) for c in report.columns}
    assert sources["Intern kode"] == ("mrn", "mapping")
    assert sources["Mobil"] == ("", "ignored")
    assert report.field_counts["mrn"] == 2


def test_headerless_file_hides_its_first_row() -> None:
    data = b"Anne Testesen,Vestergade\nBo Test,Gade\n"
    report = inspect(io.BytesIO(data))
    assert report.tables_without_mapping == [""]
    text = report.render()
    assert "header names not shown" in text
    assert "Anne Testesen" not in text
    assert report.rows_without_identifiers == 1  # the first row was taken as a header


def test_value_like_keys_and_fhir_mapping() -> None:
    keyed = json.dumps([{"0101801234": {"email": "anne@example.dk"}, "cpr": "0101801234"}])
    report = inspect(io.BytesIO(keyed.encode()))
    _assert_no_identifier(report.render())
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.208.176.1.2", "value": "0101801234"}],
    }
    ndjson = json.dumps(patient) + "\n" + json.dumps({"resourceType": "Observation"}) + "\n"
    report = inspect(io.BytesIO(ndjson.encode()))
    assert ("Patient", "cpr", "fhir") in {(c.table, c.target, c.source) for c in report.columns}
    assert report.skipped_resources == {"Observation": 1}
    assert report.category_counts == {Category.NATIONAL_ID.name.lower(): 1}
    assert "skipped     Observation 1" in report.render()
    _assert_no_identifier(report.render())
