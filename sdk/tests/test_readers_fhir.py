"""FHIR R4 NDJSON: Patient identifiers by system, names, telecom, skipped resources."""

from __future__ import annotations

import io
import json
from typing import Any

from breachmatch.columns import ColumnMapping
from breachmatch.readers import RawRow, open_records
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
