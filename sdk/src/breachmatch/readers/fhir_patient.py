"""A FHIR R4 Patient resource as a `PersonRecord`.

Identifiers are recognised by ``system``, never by position, through the
mapping file's `FhirMapping` (`breachmatch.columns.fhir`: the CPR systems in
use in Denmark, SSN, MRNs by type ``MR``, and the systems a hospital maps
itself). An MRN's facility is the one configured for its system, else
``assigner.display``, else ``assigner.reference``, else the identifier
``system`` (comparable to a CSV "facility" column); the mapping file's
default facility applies when none is given. Only the first identifier of
each kind is used. An identifier in a system nobody recognised is counted in
`UnknownSystems`, by system, so a hospital learns that its export holds
identifiers breachmatch is not using.

The official name (else the first) gives ``given_name`` (all given names),
``family_name`` and ``full_name`` (its ``text``); ``telecom`` gives e-mails
and phones (first to the field, the rest to the extras; which points count
is the mapping's ``telecom`` rule); the home address (else the first) gives
``address`` (its ``text``, else lines, postal code, city, country); the
preferred ``communication`` language gives ``language``; the resource ``id``
is ``patient_id``. Fields of the wrong JSON type are ignored, never fatal.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from breachmatch.columns import display_name
from breachmatch.columns.fhir import FhirMapping
from breachmatch.records import Category, PersonRecord

#: Distinct unknown systems counted by name; the rest are counted together.
_SYSTEMS_NAMED = 20
_OTHER_SYSTEMS = "(other systems)"
_NO_SYSTEM = "(no system)"


class UnknownSystems(Counter[str]):
    """Patients with an identifier in a system no rule recognises, per system.

    System names are shown to people (they are namespaces, not patient
    data), so they pass `display_name`; a junk dump with a new "system" per
    row cannot grow this beyond `_SYSTEMS_NAMED` names.
    """

    def add(self, systems: set[str]) -> None:
        for system in systems:
            if system in self or len(self) < _SYSTEMS_NAMED:
                self[system] += 1
            else:
                self[_OTHER_SYSTEMS] += 1


def fhir_mapping_rows(fhir: FhirMapping) -> list[tuple[str, str]]:
    """The FHIR mapping as (source, target) pairs, for `inspect` to show."""
    return [
        *fhir.describe(),
        ("identifier[MR].assigner.display | .reference | .system", "facility"),
        ("name[use=official].given", "given_name"),
        ("name[use=official].family", "family_name"),
        ("name[use=official].text", "full_name"),
        ("birthDate", "birth_date"),
        ("address[use=home]", "address"),
        ("communication[preferred].language", "language"),
        ("id", "patient_id"),
    ]


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _preferred(items: list[dict[str, Any]], key: str, wanted: object) -> dict[str, Any]:
    """The first item whose `key` equals `wanted`, else the first item, else {}."""
    for item in items:
        if item.get(key) == wanted:
            return item
    return items[0] if items else {}


def _type_codes(identifier: dict[str, Any]) -> list[str]:
    codings = _dicts(_dict(identifier.get("type")).get("coding"))
    return [code for coding in codings if isinstance(code := coding.get("code"), str)]


def _identifiers(record: PersonRecord, resource: dict[str, Any], fhir: FhirMapping) -> set[str]:
    """Fill the identifier fields; return the unknown systems seen (display-safe)."""
    unknown: set[str] = set()
    for identifier in _dicts(resource.get("identifier")):
        value = _text(identifier.get("value"))
        if value is None:
            continue
        raw_system = identifier.get("system")
        system = raw_system if isinstance(raw_system, str) else None
        target = fhir.identifier_field(system, _type_codes(identifier))
        if target is None:
            unknown.add(display_name(system.strip()) if system and system.strip() else _NO_SYSTEM)
        elif target == "cpr":
            record.cpr = record.cpr or value
        elif target == "ssn":
            record.ssn = record.ssn or value
        elif target == "patient_id":
            record.patient_id = value
        elif target == "mrn" and record.mrn is None:  # the first MRN only
            assigner = _dict(identifier.get("assigner"))
            record.mrn = value
            record.facility = (
                fhir.mrn_facility(system)
                or _text(assigner.get("display"))
                or _text(assigner.get("reference"))
                or _text(system)
            )
    return unknown


def _name(record: PersonRecord, resource: dict[str, Any]) -> None:
    name = _preferred(_dicts(resource.get("name")), "use", "official")
    given = name.get("given")
    if isinstance(given, list):
        record.given_name = " ".join(g.strip() for g in given if _text(g)) or None
    record.family_name = _text(name.get("family"))
    record.full_name = _text(name.get("text"))


def _telecom(record: PersonRecord, resource: dict[str, Any], fhir: FhirMapping) -> None:
    for point in _dicts(resource.get("telecom")):
        value = _text(point.get("value"))
        target = fhir.telecom_field(point.get("system"), point.get("use"))
        if value is None or target is None:
            continue
        if target == "email":
            if record.email is None:
                record.email = value
            elif value != record.email and value not in record.extra_emails:
                record.extra_emails.append(value)
        elif record.phone is None:
            record.phone = value
        elif value != record.phone and value not in record.extra_phones:
            record.extra_phones.append(value)


def _address(record: PersonRecord, resource: dict[str, Any]) -> None:
    address = _preferred(_dicts(resource.get("address")), "use", "home")
    text = _text(address.get("text"))
    if text is None:
        lines = address.get("line")
        parts = [p for p in lines if _text(p)] if isinstance(lines, list) else []
        parts += [address[k] for k in ("postalCode", "city", "country") if _text(address.get(k))]
        text = ", ".join(p.strip() for p in parts) or None
    record.address = text


def _language(record: PersonRecord, resource: dict[str, Any]) -> None:
    communication = _preferred(_dicts(resource.get("communication")), "preferred", True)
    language = _dict(communication.get("language"))
    codings = _dicts(language.get("coding"))
    record.language = (_text(codings[0].get("code")) if codings else None) or _text(
        language.get("text")
    )


def patient_record(
    resource: dict[str, Any],
    fhir: FhirMapping,
    default_facility: str | None,
    unknown_systems: UnknownSystems,
) -> PersonRecord:
    """The record for one Patient resource, with its exposure categories.

    A Patient carrying identifiers in unknown systems is counted in `unknown_systems`.
    """
    record = PersonRecord(patient_id=_text(resource.get("id")))
    unknown = _identifiers(record, resource, fhir)
    if unknown:
        unknown_systems.add(unknown)
    _name(record, resource)
    _telecom(record, resource, fhir)
    _address(record, resource)
    _language(record, resource)
    record.birth_date = _text(resource.get("birthDate"))
    if record.mrn is not None and record.facility is None:
        record.facility = default_facility
    categories = Category(0)
    if record.email or record.phone or record.address:
        categories |= Category.CONTACT
    if record.cpr or record.ssn:
        categories |= Category.NATIONAL_ID
    record.categories = categories
    return record
