"""A FHIR R4 Patient resource as a `PersonRecord`.

Identifiers are recognised by ``system``, never by position:

* ``urn:oid:1.2.208.176.1.2`` → ``cpr`` (the Danish CPR register's OID);
* ``http://hl7.org/fhir/sid/us-ssn`` → ``ssn``;
* an identifier whose ``type.coding`` has code ``MR`` → ``mrn``, with the
  facility taken from ``assigner.display`` (comparable to a CSV "facility"
  column), else ``assigner.reference``, else the identifier ``system``; the
  mapping file's default facility applies when none is given. Only the first
  MR identifier is used.

The official name (else the first) gives ``given_name`` (all given names),
``family_name`` and ``full_name`` (its ``text``); ``telecom`` gives e-mails
and phones (first to the field, the rest to the extras); the home address
(else the first) gives ``address`` (its ``text``, else lines, postal code,
city, country); the preferred ``communication`` language gives
``language``; the resource ``id`` is ``patient_id``. Fields of the wrong JSON
type are ignored, never fatal.
"""

from __future__ import annotations

from typing import Any

from breachmatch.records import Category, PersonRecord

CPR_SYSTEM = "urn:oid:1.2.208.176.1.2"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
MRN_TYPE_CODE = "MR"

#: The fixed FHIR mapping as (source, target) pairs, for `inspect` to show.
FHIR_MAPPING: tuple[tuple[str, str], ...] = (
    (f"identifier[system={CPR_SYSTEM}]", "cpr"),
    (f"identifier[system={SSN_SYSTEM}]", "ssn"),
    (f"identifier[type.coding.code={MRN_TYPE_CODE}]", "mrn"),
    ("identifier[MR].assigner.display | .reference | .system", "facility"),
    ("name[use=official].given", "given_name"),
    ("name[use=official].family", "family_name"),
    ("name[use=official].text", "full_name"),
    ("birthDate", "birth_date"),
    ("telecom[system=email]", "email"),
    ("telecom[system=phone|sms]", "phone"),
    ("address[use=home]", "address"),
    ("communication[preferred].language", "language"),
    ("id", "patient_id"),
)


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


def _is_mrn(identifier: dict[str, Any]) -> bool:
    codings = _dicts(_dict(identifier.get("type")).get("coding"))
    return any(coding.get("code") == MRN_TYPE_CODE for coding in codings)


def _identifiers(record: PersonRecord, resource: dict[str, Any]) -> None:
    for identifier in _dicts(resource.get("identifier")):
        value = _text(identifier.get("value"))
        if value is None:
            continue
        system = identifier.get("system")
        if system == CPR_SYSTEM:
            record.cpr = record.cpr or value
        elif system == SSN_SYSTEM:
            record.ssn = record.ssn or value
        elif _is_mrn(identifier) and record.mrn is None:
            assigner = _dict(identifier.get("assigner"))
            record.mrn = value
            record.facility = (
                _text(assigner.get("display")) or _text(assigner.get("reference")) or _text(system)
            )


def _name(record: PersonRecord, resource: dict[str, Any]) -> None:
    name = _preferred(_dicts(resource.get("name")), "use", "official")
    given = name.get("given")
    if isinstance(given, list):
        record.given_name = " ".join(g.strip() for g in given if _text(g)) or None
    record.family_name = _text(name.get("family"))
    record.full_name = _text(name.get("text"))


def _telecom(record: PersonRecord, resource: dict[str, Any]) -> None:
    for point in _dicts(resource.get("telecom")):
        value = _text(point.get("value"))
        system = point.get("system")
        if value is None:
            continue
        if system == "email":
            if record.email is None:
                record.email = value
            elif value != record.email and value not in record.extra_emails:
                record.extra_emails.append(value)
        elif system in ("phone", "sms"):
            if record.phone is None:
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


def patient_record(resource: dict[str, Any], default_facility: str | None) -> PersonRecord:
    """The record for one Patient resource, with its exposure categories."""
    record = PersonRecord(patient_id=_text(resource.get("id")))
    _identifiers(record, resource)
    _name(record, resource)
    _telecom(record, resource)
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
