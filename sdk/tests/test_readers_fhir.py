"""FHIR R4 NDJSON: identifiers by system (built-in and mapped), telecom, skipped resources."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from breachmatch.columns import ColumnMapping, MappingError
from breachmatch.readers import RawRow, inspect, open_records
from breachmatch.records import Category

CPR = "urn:oid:1.2.208.176.1.2"
SSN = "http://hl7.org/fhir/sid/us-ssn"
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}

DANISH: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "identifier": [
        {"system": CPR, "value": "0101801234"},
        {
            "type": MR_TYPE,
            "system": "urn:oid:1.2.208.176.9.1",
            "value": "J-000123",
            "assigner": {"display": "Testklinikken"},
        },
        {"type": MR_TYPE, "value": "second-mr-ignored"},
    ],
    "name": [
        {"use": "nickname", "given": ["Sus"]},
        {
            "use": "official",
            "family": "Testesen",
            "given": ["Anne", "Sofie"],
            "text": "ANNE TESTESEN",
        },
    ],
    "birthDate": "1980-01-01",
    "telecom": [
        {"system": "phone", "value": "+45 11 22 33 44"},
        {"system": "sms", "value": "55667788"},
        {"system": "email", "value": "ANNE@EXAMPLE.DK"},
        {"system": "fax", "value": "99999999"},
    ],
    "address": [
        {"use": "work", "text": "Arbejdsvej 9"},
        {"use": "home", "line": ["Åvej 1", "2. th"], "postalCode": "8000", "city": "Aarhus C"},
    ],
    "communication": [
        {"language": {"coding": [{"code": "en"}]}},
        {"language": {"coding": [{"code": "da"}]}, "preferred": True},
    ],
}
AMERICAN: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-2",
    "identifier": [
        {"system": SSN, "value": "123-45-6789"},
        {"type": MR_TYPE, "system": "https://mosaic.example/mrn", "value": "MRN-42"},
    ],
    "name": [{"family": "Test", "given": ["Bob"]}],
}
NO_FACILITY: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"type": MR_TYPE, "value": "77"}],
    "name": "not a list",
    "telecom": [{"system": "email"}, "junk"],
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "obs-1",
    "subject": {"reference": "Patient/pat-1"},
}


def _ndjson(*resources: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in resources).encode()


def test_patients_are_mapped_by_identifier_system() -> None:
    data = _ndjson(DANISH, OBSERVATION, AMERICAN, OBSERVATION, {"resourceType": "Condition"})
    mapping = ColumnMapping(facility="Default Hospital")
    with open_records(io.BytesIO(data), mapping=mapping) as stream:
        records, bad = stream.read_all()
        assert stream.format == "fhir"
        assert stream.stats.skipped_resources == {"Observation": 2, "Condition": 1}
        assert stream.stats.rows_read == 2
    assert not bad
    anne, bob = records
    assert (anne.patient_id, anne.cpr, anne.ssn) == ("pat-1", "0101801234", None)
    assert (anne.mrn, anne.facility) == ("J-000123", "Testklinikken")
    assert (anne.given_name, anne.family_name, anne.full_name) == (
        "Anne Sofie",
        "Testesen",
        "ANNE TESTESEN",
    )
    assert anne.birth_date == "1980-01-01"
    assert (anne.phone, anne.extra_phones) == ("+45 11 22 33 44", ["55667788"])
    assert anne.email == "ANNE@EXAMPLE.DK"
    assert anne.address == "Åvej 1, 2. th, 8000, Aarhus C"
    assert anne.language == "da"
    assert anne.categories == Category.CONTACT | Category.NATIONAL_ID
    assert (bob.ssn, bob.mrn, bob.facility) == (
        "123-45-6789",
        "MRN-42",
        "https://mosaic.example/mrn",
    )
    assert (bob.given_name, bob.family_name) == ("Bob", "Test")
    assert bob.categories == Category.NATIONAL_ID


def test_default_facility_and_wrongly_typed_fields() -> None:
    mapping = ColumnMapping(facility="Default Hospital")
    with open_records(io.BytesIO(_ndjson(NO_FACILITY)), mapping=mapping) as stream:
        records, bad = stream.read_all()
    assert not bad
    (record,) = records
    assert (record.mrn, record.facility) == ("77", "Default Hospital")
    assert (record.given_name, record.email) == (None, None)
    assert record.categories == Category(0)


def test_bundles_are_opened_and_bad_lines_counted() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": AMERICAN},
            {"resource": OBSERVATION},
            {"fullUrl": "x"},
            {"resource": 3},
        ],
    }
    data = _ndjson(bundle, {"id": "no type"}) + b'{"resourceType": "Patient", \n\n'
    with open_records(io.BytesIO(data), format="fhir") as stream:
        records, bad = stream.read_all()
        assert stream.stats.skipped_resources == {"Observation": 1}
    assert [r.ssn for r in records] == ["123-45-6789"]
    assert [b.reason for b in bad] == ["json_not_object", "fhir_no_resource_type", "json_syntax"]


def test_raw_rows_show_patients_flattened() -> None:
    with open_records(io.BytesIO(_ndjson(DANISH, OBSERVATION))) as stream:
        (row,) = [r for r in stream.raw_rows() if isinstance(r, RawRow)]
    assert row.table == "Patient"
    assert row.as_dict()["identifier.0.system"] == CPR
    assert row.as_dict()["telecom.2.value"] == "ANNE@EXAMPLE.DK"


def _patient(identifiers: list[dict[str, Any]], telecom: list[dict[str, Any]] | None = None):
    return {"resourceType": "Patient", "identifier": identifiers, "telecom": telecom or []}


@pytest.mark.parametrize(
    "system",
    [
        "urn:oid:1.2.208.176.1.2",
        "URN:OID:1.2.208.176.1.2 ",
        "http://www.cpr.dk/cpr-systemet",
        "https://hl7.dk/fhir/core/NamingSystem/cpr/",
        "http://ehealth.sundhed.dk/fhir/NamingSystem/cpr",
        "urn:oid:1.2.208.176.1.6.1.1",
        "urn:oid:1.2.208.176.1.6.1.3.187",
    ],
)
def test_every_danish_cpr_system_in_use_gives_a_cpr(system: str) -> None:
    data = _ndjson(_patient([{"system": system, "value": "0101801234"}]))
    with open_records(io.BytesIO(data)) as stream:
        (record,), _ = stream.read_all()
        assert not stream.stats.unknown_identifier_systems
    assert record.cpr == "0101801234"
    assert record.categories == Category.NATIONAL_ID


def test_identifiers_in_unknown_systems_are_counted_by_system_never_by_value() -> None:
    local = "http://hospital-a.example/pas"
    patients = [
        _patient(
            [{"system": local, "value": "0101801234"}, {"system": CPR, "value": "0202802345"}]
        ),
        _patient([{"system": local, "value": "0303803456"}]),
        _patient([{"value": "0404804567"}]),
        _patient([{"system": "0505805678", "value": "x"}]),
    ]
    with open_records(io.BytesIO(_ndjson(*patients))) as stream:
        records, _ = stream.read_all()
        unknown = dict(stream.stats.unknown_identifier_systems)
    assert [r.cpr for r in records] == ["0202802345", None, None, None]
    assert unknown == {local: 2, "(no system)": 1, "<value-like name hidden>": 1}
    report = inspect(io.BytesIO(_ndjson(*patients)))
    assert report.unknown_identifier_systems == unknown
    text = report.render() + json.dumps(report.to_dict())
    assert local in text
    for value in ("0101801234", "0303803456", "0404804567", "0505805678"):
        assert value not in text


def test_the_mapping_file_maps_identifier_systems_facilities_and_telecom() -> None:
    mapping = ColumnMapping.from_document(
        {
            "facility": "Fallback",
            "fhir": {
                "identifier_systems": {
                    "http://hospital-a.example/mrn": "mrn",
                    "https://hospital-a.example/pas": "patient_id",
                    CPR: "ignore",
                    "http://other.example/cpr": "cpr",
                },
                "mrn_facilities": {"http://hospital-a.example/mrn/": "Hospital A"},
                "telecom": {"system:other": "phone", "use:old": "ignore"},
            },
        }
    )
    patient = _patient(
        [
            {"system": CPR, "value": "0101801234"},
            {"system": "http://other.example/cpr", "value": "0202802345"},
            {"system": "http://hospital-a.example/mrn", "value": "A-1",
             "assigner": {"display": "Somewhere else"}},
            {"system": "http://hospital-a.example/pas", "value": "PAS-7"},
        ],
        [
            {"system": "phone", "use": "old", "value": "11111112"},
            {"system": "other", "value": "21345678"},
            {"system": "email", "use": "old", "value": "old@example.dk"},
            {"system": "email", "value": "new@example.dk"},
        ],
    )  # fmt: skip
    with open_records(io.BytesIO(_ndjson(patient)), mapping=mapping) as stream:
        (record,), _ = stream.read_all()
        assert not stream.stats.unknown_identifier_systems
        report = inspect(io.BytesIO(_ndjson(patient)), mapping=mapping)
    assert (record.cpr, record.mrn, record.facility) == ("0202802345", "A-1", "Hospital A")
    assert record.patient_id == "PAS-7"
    assert (record.phone, record.extra_phones) == ("21345678", [])
    assert (record.email, record.extra_emails) == ("new@example.dk", [])
    sources = {(c.header, c.target) for c in report.columns}
    assert ("identifier[system=http://hospital-a.example/mrn]", "mrn") in sources
    assert ("telecom[use:old]", "ignore") in sources


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], "'fhir' must be an object"),
        ({"systems": {}}, "unknown key fhir.systems"),
        ({"identifier_systems": {"http://x": "phone"}}, "target must be one of cpr, ssn, mrn"),
        ({"identifier_systems": {"0101801234": "cpr "}}, "<value-like name hidden>"),
        ({"telecom": {"phone": "phone"}}, "keys are system:<code> or use:<code>"),
        ({"mrn_facilities": {"http://x": 3}}, "fhir.mrn_facilities must be an object of strings"),
    ],
)
def test_a_bad_fhir_section_names_the_key_and_never_a_value(section: object, message: str):
    with pytest.raises(MappingError) as raised:
        ColumnMapping.from_document({"fhir": section})
    assert message in str(raised.value)
    assert "0101801234" not in str(raised.value)
