"""Automatic column mapping: synonyms, nested keys, and how cells become a record."""

from __future__ import annotations

import pytest

from breachmatch.columns import (
    ColumnMapping,
    ColumnPlan,
    auto_target,
    header_key,
    looks_like_data,
)
from breachmatch.records import Category


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("Navn", "full_name"),
        ("Fulde navn", "full_name"),
        ("Fornavn", "given_name"),
        ("Mellemnavn", "given_name"),
        ("Efternavn", "family_name"),
        ("CPR", "cpr"),
        ("CPR-nr.", "cpr"),
        ("cpr_nummer", "cpr"),
        ("Personnummer", "cpr"),
        ("Fødselsdato", "birth_date"),
        ("FØDSELSDATO", "birth_date"),
        ("Foedselsdato", "birth_date"),
        ("Fodselsdato", "birth_date"),
        ("Født", "birth_date"),
        ("Telefon", "phone"),
        ("Tlf.", "phone"),
        ("Mobil", "phone"),
        ("Mobilnummer", "phone"),
        ("E-mail", "email"),
        ("Mail", "email"),
        ("Adresse", "address"),
        ("Postnr", "address"),
        ("By", "address"),
        ("Journalnummer", "mrn"),
        ("Journal-nr.", "mrn"),
        ("Journal", "category:medical_history"),
        ("Henvisning", "category:referrals"),
        ("Medicin", "category:medication"),
        ("Diagnose", "category:diagnoses"),
        ("Notat", "category:free_text"),
        ("Bemærkning", "category:free_text"),
        ("Sprog", "language"),
        ("first_name", "given_name"),
        ("Given Name", "given_name"),
        ("surname", "family_name"),
        ("date_of_birth", "birth_date"),
        ("DOB", "birth_date"),
        ("social_security_number", "ssn"),
        ("SSN", "ssn"),
        ("medical_record_number", "mrn"),
        ("patient_id", "patient_id"),
        ("facility", "facility"),
        ("mobile", "phone"),
        ("notes", "category:free_text"),
        ("ICD-10", "category:diagnoses"),
        ("prescription", "category:medication"),
        ("referral", "category:referrals"),
        ("preferred_language", "language"),
    ],
)
def test_danish_and_english_headers_map_to_their_targets(header: str, label: str) -> None:
    target = auto_target(header)
    assert target is not None, header
    assert target.label == label


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("patient.contact.email", "email"),
        ("patient.phones.1", "phone"),
        ("name.first", "given_name"),
        ("name.0.given.0", "given_name"),
        ("address.city", "address"),
        ("E-mail 2", "email"),
        ("phone2", "phone"),
        ("record.journal", "category:medical_history"),
        ("journal.entries.0.text", "category:medical_history"),
        ("prescriptions.3.drug.code", "category:medication"),
    ],
)
def test_nested_keys_and_numbered_columns_match_on_their_name(path: str, label: str) -> None:
    target = auto_target(path)
    assert target is not None, path
    assert target.label == label


@pytest.mark.parametrize(
    "header", ["id", "created_by", "Alder", "Køn", "column_3", "foo.bar", "name.use"]
)
def test_unknown_headers_stay_unmapped(header: str) -> None:
    assert auto_target(header) is None


def test_header_key_ignores_case_accents_and_punctuation() -> None:
    assert header_key("CPR-nr.") == header_key("cpr nr") == "cprnr"
    assert header_key("Fødselsdato") == "foedselsdato"
    assert header_key("Émail_Adresse") == "emailadresse"


def test_values_look_like_data_but_headers_do_not() -> None:
    assert looks_like_data("010180-1234")
    assert looks_like_data("anne@example.dk")
    assert looks_like_data("+45 12 34 56 78")
    assert not looks_like_data("CPR-nr.")
    assert not looks_like_data("ICD-10 kode")


def _plan(headers: list[str], mapping: ColumnMapping | None = None) -> ColumnPlan:
    return ColumnPlan.for_headers(headers, mapping or ColumnMapping())


def test_several_columns_meet_in_one_field() -> None:
    plan = _plan(["Telefon", "Mobil", "Arbejdstelefon", "Adresse", "Postnr", "By", "E-mail"])
    record = plan.record(
        ["+45 11 22 33 44", "55667788", "+45 11 22 33 44", "Vestergade 1", "8000", "Aarhus C", ""]
    )
    assert record.phone == "+45 11 22 33 44"
    assert record.extra_phones == ["55667788"]  # the duplicate is not repeated
    assert record.address == "Vestergade 1, 8000, Aarhus C"
    assert record.email is None
    assert record.categories == Category.CONTACT


def test_given_names_join_in_column_order() -> None:
    record = _plan(["Fornavn", "Mellemnavn", "Efternavn"]).record(["Anne", "Marie", "Testesen"])
    assert (record.given_name, record.family_name) == ("Anne Marie", "Testesen")


def test_categories_are_set_only_for_non_empty_cells() -> None:
    plan = _plan(["CPR", "Journal", "Henvisning", "Medicin", "Diagnose", "Notat", "Ukendt"])
    full = plan.record(["0101801234", "tekst", "henvist", "pinex", "DJ45", "ring", "x"])
    empty = plan.record(["", "  ", "NULL", "\\N", None, "null", "x"])
    assert full.categories == (
        Category.NATIONAL_ID
        | Category.MEDICAL_HISTORY
        | Category.REFERRALS
        | Category.MEDICATION
        | Category.DIAGNOSES
        | Category.FREE_TEXT
    )
    assert empty.categories == Category(0)
    assert empty.cpr is None


def test_values_are_stripped_and_otherwise_untouched() -> None:
    plan = _plan(["Navn", "E-mail", "CPR"])
    record = plan.record(["  SØREN ÆBLE ", "S.AEBLE@EXAMPLE.DK ", "010180 1234"])
    assert record.full_name == "SØREN ÆBLE"
    assert record.email == "S.AEBLE@EXAMPLE.DK"
    assert record.cpr == "010180 1234"


def test_first_non_empty_cell_wins_for_single_valued_fields() -> None:
    record = _plan(["CPR", "Personnummer"]).record(["", "0101801234"])
    assert record.cpr == "0101801234"
    record = _plan(["CPR", "Personnummer"]).record(["0101801234", "0202802345"])
    assert record.cpr == "0101801234"


def test_default_facility_applies_only_to_records_with_an_mrn() -> None:
    mapping = ColumnMapping(facility="Testklinikken")
    plan = _plan(["Journalnummer", "Navn"], mapping)
    assert plan.record(["J-1", "A"]).facility == "Testklinikken"
    assert plan.record(["", "A"]).facility is None
    with_column = _plan(["Journalnummer", "Hospital"], mapping).record(["J-1", "Vestsygehus"])
    assert with_column.facility == "Vestsygehus"


def test_plan_reports_unmapped_headers_and_decisions() -> None:
    plan = _plan(["Navn", "Køn", "CPR"])
    assert plan.unmapped == ("Køn",)
    assert [d.source for d in plan.decisions] == ["auto", "unmapped", "auto"]
    assert plan.maps_anything
    assert not _plan(["a", "b"]).maps_anything
