"""Column mapping: automatic synonyms, optionally overridden by a mapping file.

A mapping file is JSON, written by the operator (ingest) or the hospital (SDK)
when the automatic decision is wrong or a column is not recognised::

    {
      "columns": {
        "Kundenr": "patient_id",
        "Journal": "mrn",
        "patients.col_7": "cpr",
        "Fritekst 2": "category:free_text",
        "Intern kode": "ignore"
      },
      "facility": "Alles Lægehus",
      "auto": true,
      "fhir": {"identifier_systems": {"http://hospital-a.example/mrn": "mrn"}}
    }

``columns``
    header → target. A target is a record field (``cpr``, ``ssn``, ``mrn``,
    ``facility``, ``email``, ``phone``, ``full_name``, ``given_name``,
    ``family_name``, ``birth_date``, ``patient_id``, ``address``,
    ``language``), ``category:<name>`` (``contact``, ``national_id``,
    ``medical_history``, ``referrals``, ``medication``, ``diagnoses``,
    ``free_text``), or ``ignore``. A header is matched exactly, or as
    ``<table>.<header>`` to address one table of an SQL dump, or by its
    comparison key (case, accents and punctuation ignored). Headers of a file
    without a header row are ``column_1``, ``column_2``, …
``facility``
    the facility that issued the dump's MRNs, used for every record that has
    an ``mrn`` but no facility column value (MRNs only match within one
    facility).
``auto``
    ``false`` maps only the columns listed; default ``true`` also applies the
    Danish/English synonyms to every column not listed.
``fhir``
    for FHIR Patients, which have no columns: identifier systems and telecom
    points → fields (`breachmatch.columns.fhir`).

Errors name the offending key and the rule it breaks and never repeat a
value, since a wrong file passed as a mapping could be a patient export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from breachmatch.columns.fhir import FhirMapping, FhirMappingError
from breachmatch.columns.headers import display_name, header_key
from breachmatch.columns.synonyms import auto_target
from breachmatch.columns.targets import Target

IGNORE = "ignore"
_TOP_LEVEL_KEYS = ("auto", "columns", "facility", "fhir")

#: Why a column got its target: the synonym table, the mapping file, or neither.
Source = Literal["auto", "mapping", "ignored", "unmapped"]


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the bad key."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The mapping decision for one column."""

    header: str
    target: Target | None
    source: Source


@dataclass(frozen=True)
class ColumnMapping:
    """Overrides (header → target, None meaning ignore) plus the default facility."""

    columns: Mapping[str, Target | None] = field(default_factory=dict)
    facility: str | None = None
    auto: bool = True
    fhir: FhirMapping = field(default_factory=FhirMapping)
    _by_key: dict[str, Target | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keyed = {header_key(header): target for header, target in self.columns.items()}
        object.__setattr__(self, "_by_key", keyed)

    @classmethod
    def load(cls, path: Path) -> ColumnMapping:
        """Read and validate a mapping file."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise MappingError("mapping file is not UTF-8 text") from exc
        except json.JSONDecodeError as exc:
            raise MappingError(
                f"mapping file is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from exc
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: object) -> ColumnMapping:
        """Validate a parsed mapping document (see the module docstring)."""
        if not isinstance(document, dict):
            raise MappingError("mapping file: the top level must be a JSON object")
        for key in document:
            if key not in _TOP_LEVEL_KEYS:
                raise MappingError(
                    f"mapping file: unknown key {display_name(str(key))!r} "
                    f"(expected {', '.join(_TOP_LEVEL_KEYS)})"
                )
        auto = document.get("auto", True)
        if not isinstance(auto, bool):
            raise MappingError("mapping file: 'auto' must be true or false")
        facility = document.get("facility")
        if facility is not None and (not isinstance(facility, str) or not facility.strip()):
            raise MappingError("mapping file: 'facility' must be a non-empty string")
        try:
            fhir = FhirMapping.from_document(document.get("fhir", {}))
        except FhirMappingError as exc:
            raise MappingError(str(exc)) from None
        return cls(
            columns=_parse_columns(document.get("columns", {})),
            facility=facility.strip() if facility else None,
            auto=auto,
            fhir=fhir,
        )

    def decide(self, table: str, header: str) -> Decision:
        """The target of `header` in `table` (table is "" outside SQL/JSON documents)."""
        for candidate in (f"{table}.{header}" if table else None, header):
            if candidate is not None and candidate in self.columns:
                return _explicit(header, self.columns[candidate])
        key = header_key(header)
        if key in self._by_key:
            return _explicit(header, self._by_key[key])
        target = auto_target(header) if self.auto else None
        return Decision(header, target, "auto" if target is not None else "unmapped")


def _explicit(header: str, target: Target | None) -> Decision:
    return Decision(header, target, "mapping" if target is not None else "ignored")


def _parse_columns(columns: object) -> dict[str, Target | None]:
    if not isinstance(columns, dict):
        raise MappingError("mapping file: 'columns' must be an object of header → target")
    parsed: dict[str, Target | None] = {}
    for header, spec in columns.items():
        where = f"mapping file: columns[{display_name(header)!r}]"
        if not header.strip():
            raise MappingError("mapping file: columns has an empty header name")
        if not isinstance(spec, str):
            raise MappingError(f"{where}: target must be a string")
        if spec == IGNORE:
            parsed[header] = None
            continue
        try:
            parsed[header] = Target.parse(spec)
        except ValueError as exc:
            raise MappingError(f"{where}: {exc}") from None
    return parsed
