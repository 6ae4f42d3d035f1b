"""The matching itself, on a real signed filter: each key kind alone, categories, strength.

The leak side is built here the way ingest builds it (match keys of each
leaked record → `oprf.evaluate` under the operator key → `FilterWriter` with
the record's categories), and the hospital side is read from a CSV export the
way the CLI reads it; only the network is left out (the outputs come from
`oprf.evaluate`, which RFC 9497 makes equal to blind → evaluate → finalize).
"""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import nacl.signing
import pytest

from breachmatch import oprf
from breachmatch.client.breaches import StoredBreach
from breachmatch.client.cache_segments import InputIndex
from breachmatch.client.check import KeyedTokens, match_breach
from breachmatch.client.errors import ArtifactRefusedError, PatientsFileError
from breachmatch.client.key_index import PatientKeys, patient_keys
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.client.patients import PatientSet, read_patients
from breachmatch.filter import FilterWriter, Manifest, derive_keys, sign_manifest
from breachmatch.identifiers import match_keys
from breachmatch.records import Category, PersonRecord

FACILITY = "Hospital A"
HOSPITAL_CSV = """patient_id,cpr,mrn,first_name,last_name,birth_date,email,phone,address,language
P-cpr,010203-1234,,Anna,Berg,1903-02-01,anna@hospital.example,+45 11 11 11 11,Vej 1,da
P-email,,,Bo,Dahl,1950-01-01,bo.dahl@example.dk,+45 22 22 22 22,Vej 2,da
P-phone,,,Carl,Eske,1960-01-01,carl@example.dk,+45 33 12 45 78,Vej 3,en
P-namedob,,,Søren,Kjær,1970-07-07,soren@example.dk,+45 44 44 44 44,Vej 4,da
P-mrn,,A-0042,Dora,Falk,1980-08-08,dora@example.dk,+45 55 55 55 55,Vej 5,da
P-family1,,,Eva,Gram,1990-09-09,family@example.dk,,Vej 6,da
P-family2,,,Finn,Gram,1991-10-10,family@example.dk,,Vej 6,da
P-none,111111-1118,,Gert,Holm,1911-11-11,gert@example.dk,+45 66 66 66 66,Vej 7,da
"""

#: What leaked: each record shares exactly one key kind with one patient above.
LEAK = [
    PersonRecord(cpr="0102031234", categories=Category.NATIONAL_ID | Category.MEDICAL_HISTORY),
    PersonRecord(email="BO.DAHL@EXAMPLE.DK", categories=Category.CONTACT),
    PersonRecord(phone="33124578", categories=Category.CONTACT | Category.MEDICATION),
    PersonRecord(
        given_name="Soeren",
        family_name="Kjaer",
        birth_date="07-07-1970",
        categories=Category.REFERRALS,
    ),
    PersonRecord(mrn="a0042", facility="hospital a", categories=Category.DIAGNOSES),
    PersonRecord(email="family@example.dk", categories=Category.FREE_TEXT),
    PersonRecord(cpr="0909090909", email="stranger@example.dk", categories=Category.CONTACT),
]

EXPECTED = {
    "P-cpr": (("cpr",), "strong", ("national_id", "medical_history")),
    "P-email": (("email",), "medium", ("contact",)),
    "P-phone": (("phone",), "medium", ("contact", "medication")),
    "P-namedob": (("name_dob",), "medium", ("referrals",)),
    "P-mrn": (("mrn",), "strong", ("diagnoses",)),
    "P-family1": (("email",), "medium", ("free_text",)),
    "P-family2": (("email",), "medium", ("free_text",)),
}


@pytest.fixture(scope="module")
def operator() -> tuple[bytes, nacl.signing.SigningKey]:
    return oprf.random_key_pair()[0], nacl.signing.SigningKey.generate()


def build_breach(
    directory: Path, records: list[PersonRecord], secret: bytes, signer: nacl.signing.SigningKey
) -> StoredBreach:
    """A signed breach filter of `records`, stored like the SDK stores downloads."""
    writer = FilterWriter()
    for record in records:
        for key in match_keys(record).keys:
            writer.add(oprf.evaluate(secret, key.oprf_input()), record.categories)
    sink = io.BytesIO()
    summary = writer.finish(sink)
    manifest = Manifest.for_body(
        summary,
        breach_id="unit-leak",
        version=1,
        title="Unit leak",
        organisation="Clinic",
        breach_date=date(2025, 5, 1),
        added_date=date(2025, 6, 1),
        descriptions={},
        verified=True,
        sensitive=True,
        oprf_key_id="k-unit",
    )
    signed = sign_manifest(manifest, signer)
    body = directory / "body"
    body.write_bytes(sink.getvalue())
    return StoredBreach(signed.manifest, body)


@pytest.fixture
def hospital(tmp_path: Path) -> PatientSet:
    export = tmp_path / "patients.csv"
    export.write_text(HOSPITAL_CSV)
    return read_patients(export, facility=FACILITY)


def _keys(patients: PatientSet) -> PatientKeys:
    return patient_keys(patients, InputIndex(bytes(32)).of)


def _tokens(secret: bytes, keys: PatientKeys, key_id: str = "k-unit") -> KeyedTokens:
    key = TrustedOprfKey(key_id, oprf.public_key(secret))
    inputs = keys.keys.inputs
    return KeyedTokens(key, derive_keys([oprf.evaluate(secret, data) for data in inputs]))


def test_each_key_kind_matches_on_its_own_with_its_categories(
    tmp_path: Path, operator, hospital: PatientSet
):
    secret, signer = operator
    breach = build_breach(tmp_path, LEAK, secret, signer)
    keys = _keys(hospital)
    matches, summary = match_breach(breach, _tokens(secret, keys), keys)
    found = {m.patient_id: (m.matched_keys, m.strength, m.categories) for m in matches}
    assert found == EXPECTED
    assert summary.patients_checked == 8
    assert summary.patients_matched == 7
    assert (summary.strong, summary.medium) == (2, 5)
    assert summary.categories["contact"] == 2
    assert summary.categories["free_text"] == 2


def test_identical_inputs_of_several_patients_are_evaluated_once(hospital: PatientSet):
    index = _keys(hospital).keys
    every_key = sum(len(p.keys) for p in hospital.patients)
    assert index.count == every_key - 1  # the shared family e-mail
    owners = [index.owners_of(at) for at in range(index.count)]
    shared = [o for o in owners if len(o) == 2]
    assert [[hospital.patients[p].patient_id for p, _, _ in o] for o in shared] == [
        ["P-family1", "P-family2"]
    ]


def test_several_matched_keys_combine_their_categories(tmp_path: Path, operator):
    secret, signer = operator
    export = tmp_path / "one.csv"
    export.write_text("patient_id,cpr,email\nP1,0102031234,anna@example.dk\n")
    patients = read_patients(export)
    leak = [
        PersonRecord(cpr="010203-1234", categories=Category.NATIONAL_ID),
        PersonRecord(email="anna@example.dk", categories=Category.CONTACT),
    ]
    breach = build_breach(tmp_path, leak, secret, signer)
    keys = _keys(patients)
    (match,), _ = match_breach(breach, _tokens(secret, keys), keys)
    assert match.matched_keys == ("cpr", "email")
    assert match.strength == "strong"
    assert match.categories == ("contact", "national_id")


def test_tokens_of_another_key_id_are_refused(tmp_path: Path, operator, hospital: PatientSet):
    secret, signer = operator
    breach = build_breach(tmp_path, LEAK, secret, signer)
    keys = _keys(hospital)
    with pytest.raises(ArtifactRefusedError, match="k-unit"):
        match_breach(breach, _tokens(secret, keys, "k-other"), keys)


def test_a_stored_body_changed_on_disk_is_refused(tmp_path: Path, operator, hospital):
    secret, signer = operator
    breach = build_breach(tmp_path, LEAK, secret, signer)
    data = bytearray(breach.body.read_bytes())
    data[len(data) // 2] ^= 0x01
    breach.body.write_bytes(bytes(data))
    keys = _keys(hospital)
    with pytest.raises(ArtifactRefusedError, match="changed after it was downloaded"):
        match_breach(breach, _tokens(secret, keys), keys)


def test_export_without_identifier_columns_says_how_to_map(tmp_path: Path):
    export = tmp_path / "odd.csv"
    export.write_text("Kundenr;Ident;Navn\n1;0102031234;Anna\n")
    with pytest.raises(PatientsFileError) as refused:
        read_patients(export)
    message = str(refused.value)
    assert "not recognised: Kundenr, Ident" in message
    assert "--map" in message
    assert "0102031234" not in message


def test_mapping_file_fixes_unknown_headers(tmp_path: Path):
    export = tmp_path / "odd.csv"
    export.write_text("Kundenr;Ident\nK1;0102031234\n")
    mapping = tmp_path / "map.json"
    mapping.write_text('{"columns": {"Kundenr": "patient_id", "Ident": "cpr"}}')
    patients = read_patients(export, mapping_file=mapping)
    assert [(p.patient_id, [k.kind.value for k in p.keys]) for p in patients.patients] == [
        ("K1", ["cpr"])
    ]


def test_fhir_patients_are_read_with_their_contact_details(tmp_path: Path):
    export = tmp_path / "Patient.ndjson"
    export.write_text(
        '{"resourceType": "Patient", "id": "fhir-1", '
        '"identifier": [{"system": "urn:oid:1.2.208.176.1.2", "value": "0102031234"}], '
        '"name": [{"use": "official", "family": "Berg", "given": ["Anna"]}], '
        '"birthDate": "1903-02-01", '
        '"telecom": [{"system": "email", "value": "anna@example.dk"}], '
        '"communication": [{"language": {"coding": [{"code": "da"}]}, "preferred": true}]}\n'
    )
    patients = read_patients(export)
    (patient,) = patients.patients
    assert patient.patient_id == "fhir-1"
    assert {k.kind.value for k in patient.keys} == {"cpr", "email", "name_dob"}
    assert patient.record.language == "da"


def test_rows_without_patient_id_are_named_by_row_and_blank_rows_skipped(tmp_path: Path):
    export = tmp_path / "anon.csv"
    export.write_text("cpr,email\n0102031234,\n,\n,bo@example.dk\n")
    patients = read_patients(export)
    assert [p.patient_id for p in patients.patients] == ["row-1", "row-3"]
    assert patients.unnamed == 2


def test_a_bad_export_row_showing_a_cpr_is_still_checked(tmp_path: Path):
    export = tmp_path / "export.csv"
    rows = [f"P{i},{i % 28 + 1:02d}0203{1000 + i},p{i}@example.dk" for i in range(30)]
    rows.append("x,0102031234,y,z,w")  # no reading fits: a bad row, its CPR salvaged
    export.write_text("patient_id,cpr,email\n" + "\n".join(rows) + "\n")
    patients = read_patients(export)
    assert patients.bad_rows == 1
    assert patients.unnamed == 1
    salvaged = patients.by_id()["row-31"]
    assert [key.kind.value for key in salvaged.keys] == ["cpr"]


def test_reading_only_some_patients_keeps_exactly_theirs(tmp_path: Path):
    """`notify` reads just the matched patients: the same records and keys as a full read."""
    export = tmp_path / "export.csv"
    rows = [f"P{i},{i % 28 + 1:02d}0203{1000 + i},p{i}@example.dk" for i in range(30)]
    rows += [",0102031234,", "P3,,again@example.dk"]  # an unnamed row; P3's second row
    export.write_text("patient_id,cpr,email\n" + "\n".join(rows) + "\n")
    full = read_patients(export).by_id()
    wanted = {"P3", "P17", "row-31", "P-gone"}
    some = read_patients(export, only=wanted)
    assert {p.patient_id: p for p in some.patients} == {
        pid: full[pid] for pid in wanted if pid in full
    }
    assert len(full["P3"].keys) == 3  # both of P3's rows
    assert (some.bad_rows, some.unnamed) == (0, 1)


def test_reading_only_absent_patients_finds_none(tmp_path: Path):
    export = tmp_path / "export.csv"
    export.write_text("patient_id,cpr\nP1,0102031234\n")
    assert read_patients(export, only={"P9"}).patients == ()
