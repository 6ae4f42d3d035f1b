"""Danish and English header synonyms, and the automatic column decision.

Decisions that are not obvious, made once here so ingest and the SDK agree:

* **"Journal"** alone is *medical-history content* (in Danish clinical usage
  "journalen" is the record itself, and leaks like Alles Lægehus exposed the
  text). A journal *number* — "Journalnummer", "Journalnr.", "Journal-id" —
  is an ``mrn`` identifier. A mapping file can override either.
* **"patient_id"** is the ``patient_id`` field (the hospital's own handle,
  reported back and used for outreach), not an ``mrn``: an export's internal
  row id is not a facility-scoped record number. Map it to ``mrn`` in a
  mapping file when it is one.
* **"Fornavn" + "Mellemnavn"** both go to ``given_name`` (joined in column
  order); **"Adresse", "Postnr", "By"** all go to ``address`` (joined with
  ", "); a second phone or e-mail column goes to ``extra_phones`` /
  ``extra_emails``. See `breachmatch.columns.plan`.
* Nested keys (``patient.contact.email``, ``phones.0``) are tried whole, then
  by their last two named segments (``name.first``), then by the last named
  segment; a trailing number (``phone2``, ``E-mail 2``) is ignored as a
  last resort. List indices are never a segment. A nested key that is still
  unknown inherits a *category* from its nearest ancestor
  (``journal.entries.0.text`` is medical history) — never a field, since
  ``name.use`` is not a name.
"""

from __future__ import annotations

from breachmatch.columns.headers import header_key, spelling_keys
from breachmatch.columns.targets import Target
from breachmatch.records import Category

_FIELD_SYNONYMS: dict[str, tuple[str, ...]] = {
    "full_name": (
        "navn", "fulde navn", "fuldt navn", "fulde_navn", "patientnavn", "patient navn",
        "name", "full name", "fullname", "patient name", "display name",
    ),
    "given_name": (
        "fornavn", "fornavne", "mellemnavn", "mellemnavne",
        "first name", "firstname", "given name", "given names", "given", "forename",
        "forenames", "middle name", "middle names", "name first",
    ),
    "family_name": (
        "efternavn", "efternavne", "slægtsnavn",
        "last name", "lastname", "surname", "family name", "family", "name last",
    ),
    "cpr": (
        "cpr", "cpr nr", "cprnr", "cpr nummer", "cpr number", "cpr no", "personnummer",
        "person nr", "personnr",
    ),
    "ssn": ("ssn", "social security number", "social security no", "social security", "us ssn"),
    "mrn": (
        "mrn", "medical record number", "medical record no", "record number",
        "journalnummer", "journalnr", "journal nr", "journal id", "journal no",
        "journal number", "patientnummer",
    ),
    "facility": (
        "facility", "facility name", "hospital", "clinic", "klinik", "sygehus",
        "hospital name", "lægehus", "laegepraksis",
    ),
    "birth_date": (
        "fødselsdato", "født", "fødselsdag", "foedt", "dob", "birth date", "birthdate",
        "date of birth", "birthday", "born",
    ),
    "email": (
        "e-mail", "email", "mail", "emails", "e-mail adresse", "emailadresse", "mailadresse",
        "email address", "e-mail address",
    ),
    "phone": (
        "telefon", "tlf", "tlf nr", "telefonnummer", "telefonnr", "mobil", "mobilnummer",
        "mobilnr", "mobiltelefon", "arbejdstelefon", "phone", "phones", "phone number",
        "telephone", "mobile", "mobile phone", "cell", "cell phone", "home phone",
        "work phone",
    ),
    "address": (
        "adresse", "postnr", "postnummer", "by", "bynavn", "postdistrikt", "vej", "vejnavn",
        "husnr", "husnummer", "address", "addresses", "street", "street address",
        "address line", "city", "town", "zip", "zipcode", "postcode", "postal code",
    ),
    "language": ("sprog", "foretrukket sprog", "language", "preferred language", "lang", "locale"),
    "patient_id": ("patient id", "patientid", "patient no", "patient number", "patient nr"),
}  # fmt: skip

_CATEGORY_SYNONYMS: dict[Category, tuple[str, ...]] = {
    Category.MEDICAL_HISTORY: (
        "journal", "journaltekst", "journalnotat", "journalnotater", "anamnese", "sygehistorie",
        "epikrise", "history", "medical history", "anamnesis", "clinical history",
    ),
    Category.REFERRALS: (
        "henvisning", "henvisninger", "henvist til", "referral", "referrals", "referred to",
    ),
    Category.MEDICATION: (
        "medicin", "medicinering", "medication", "medications", "recept", "recepter",
        "prescription", "prescriptions", "drug", "drugs", "lægemiddel", "lægemidler",
    ),
    Category.DIAGNOSES: (
        "diagnose", "diagnoser", "diagnosekode", "diagnosis", "diagnoses", "diagnosis code",
        "icd", "icd10", "icd 10", "icd code",
    ),
    Category.FREE_TEXT: (
        "notat", "notater", "note", "notes", "bemærkning", "bemærkninger", "kommentar",
        "kommentarer", "fritekst", "comment", "comments", "remark", "remarks", "free text",
    ),
}  # fmt: skip


def _build_table() -> dict[str, Target]:
    table: dict[str, Target] = {}
    entries = [(w, Target.of_field(f)) for f, ws in _FIELD_SYNONYMS.items() for w in ws]
    entries += [(w, Target.of_category(c)) for c, ws in _CATEGORY_SYNONYMS.items() for w in ws]
    for word, target in entries:
        for key in spelling_keys(word):
            if table.setdefault(key, target) != target:
                raise AssertionError(f"synonym {word!r} maps to two targets")
    return table


#: header key → target, built once at import.
SYNONYMS: dict[str, Target] = _build_table()


def _named_segments(header: str) -> list[str]:
    """Dotted path segments that are names, not list indices or empty."""
    return [seg for seg in header.split(".") if seg and not seg.isdigit()]


def auto_target(header: str) -> Target | None:
    """The target a header means by its name alone, or None when unknown."""
    candidates = [header_key(header)]
    segments = _named_segments(header)
    if len(segments) > 1:
        candidates.append(header_key("".join(segments[-2:])))
        candidates.append(header_key(segments[-1]))
    for key in candidates:
        target = SYNONYMS.get(key)
        if target is not None:
            return target
    for key in candidates:
        target = SYNONYMS.get(key.rstrip("0123456789"))
        if target is not None:
            return target
    for ancestor in reversed(segments[:-1]):
        target = SYNONYMS.get(header_key(ancestor))
        if target is not None and target.field is None:
            return target  # journal.entries.0.text is medical history too
    return None
