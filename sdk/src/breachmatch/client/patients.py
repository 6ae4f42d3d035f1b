"""The hospital's patient export, read into records and match keys.

Same readers and column mapping as ingest (`breachmatch.readers`,
`breachmatch.columns`): CSV/TSV with Danish or English headers, JSON, FHIR R4
Patient NDJSON from a bulk $export, optionally compressed, with ``--map`` for
columns the synonyms do not know. The records are kept in memory for the
run because notices need the contact details (address, language) that never
go to the matcher.

Patients are named by their ``patient_id``; rows without one are named
``row-<n>`` (their row number) and counted, so the report can say to map the
id column, and rows with neither an id nor any identifier are skipped.
Rows sharing a patient id are one patient (their keys are merged, the first
row's contact details kept). A row that could not be read but shows a CPR
number or e-mail address by value (`breachmatch.readers.salvage`) is still
checked, as an unnamed ``row-<n>`` patient, and counted among the bad rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from breachmatch.client.collector import collector_paused
from breachmatch.client.errors import PatientsFileError
from breachmatch.columns import ColumnMapping, MappingError, display_name
from breachmatch.identifiers import MatchKey, match_keys
from breachmatch.readers import (
    BadRow,
    InspectReport,
    ReaderError,
    RecordStream,
    inspect,
    open_records,
)
from breachmatch.records import PersonRecord


@dataclass(frozen=True)
class Patient:
    patient_id: str
    record: PersonRecord
    keys: tuple[MatchKey, ...]


@dataclass(frozen=True)
class PatientSet:
    path: Path
    patients: tuple[Patient, ...]
    bad_rows: int
    #: Patients named ``row-<n>`` because the export has no patient id for them.
    unnamed: int = 0
    #: FHIR Patients with identifiers in systems no rule recognises, per system.
    unknown_identifier_systems: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def without_keys(self) -> int:
        return sum(not patient.keys for patient in self.patients)

    def by_id(self) -> dict[str, Patient]:
        return {patient.patient_id: patient for patient in self.patients}


def load_mapping(mapping_file: Path | None, facility: str | None) -> ColumnMapping:
    try:
        mapping = ColumnMapping.load(mapping_file) if mapping_file else ColumnMapping()
    except OSError as exc:
        raise PatientsFileError(f"cannot read --map {mapping_file}: {exc.strerror}") from exc
    except MappingError as exc:
        raise PatientsFileError(f"--map {mapping_file}: {exc}") from exc
    return dataclasses.replace(mapping, facility=facility) if facility else mapping


def read_patients(
    path: Path,
    format: str = "auto",
    mapping_file: Path | None = None,
    facility: str | None = None,
    encoding: str | None = None,
    only: Collection[str] | None = None,
) -> PatientSet:
    """Read every patient of an export, or explain why it cannot be used.

    With ``only`` (patient ids), just those patients are kept, and only their
    rows are normalised into match keys: `notify` needs the few patients a
    check matched, and normalising every row of a large export again would
    cost it more than sealing and submitting their notices. Rows are still all
    read and counted, so a bad export is refused the same way.
    """
    with collector_paused():
        return _read_patients(path, format, mapping_file, facility, encoding, only)


def _read_patients(
    path: Path,
    format: str,
    mapping_file: Path | None,
    facility: str | None,
    encoding: str | None,
    only: Collection[str] | None,
) -> PatientSet:
    mapping = load_mapping(mapping_file, facility)
    read = ExportRead(path)
    merged: dict[str, tuple[PersonRecord, list[MatchKey]]] = {}
    for row in read.rows(format, mapping, encoding):
        patient_id = row.record.patient_id
        if only is not None and patient_id and patient_id not in only:
            continue
        found = match_keys(row.record).keys
        if not patient_id:
            if not found:
                continue  # a blank row: nobody to check, nobody to notify
            read.unnamed += 1
            patient_id = f"row-{row.number}"
            if only is not None and patient_id not in only:
                continue
        keys = merged.setdefault(patient_id, (row.record, []))[1]
        keys.extend(k for k in found if k not in keys)
    patients = tuple(
        Patient(patient_id, record, tuple(keys)) for patient_id, (record, keys) in merged.items()
    )
    if only is None or patients:
        read.require_keys(any(patient.keys for patient in patients))
    return PatientSet(path, patients, read.bad_rows, read.unnamed, read.unknown_systems)


class ExportRow(NamedTuple):
    """A row worth normalising: a readable one, or what was salvaged of an unreadable one.

    A named tuple, not a dataclass: one is made per row of a 130,000-row export.
    """

    record: PersonRecord
    #: Its row number (what names a patient without an id, ``row-<n>``).
    number: int
    salvaged: bool


@dataclass
class ExportRead:
    """One pass over an export: its rows, the counts a report gives, and its refusals.

    Shared by `read_patients` and the re-check's row memo (`memo_read`), so
    both name, count and refuse rows the same way.
    """

    path: Path
    bad_rows: int = 0
    good_rows: int = 0
    unnamed: int = 0
    unknown_systems: dict[str, int] = dataclasses.field(default_factory=dict)
    _headers: tuple[list[str], list[str]] = ([], [])

    def rows(
        self, format: str, mapping: ColumnMapping, encoding: str | None
    ) -> Iterator[ExportRow]:
        """Every row worth normalising; `PatientsFileError` if the export cannot be read."""
        if not self.path.is_file():
            raise PatientsFileError(f"the patients file {self.path} does not exist (--patients)")
        try:
            with open_records(self.path, format, mapping, encoding) as stream:
                for item in stream:
                    salvaged = isinstance(item, BadRow)
                    if isinstance(item, BadRow):
                        self.bad_rows += 1
                        if item.salvaged is None:
                            continue
                        item = item.salvaged
                    else:
                        self.good_rows += 1
                    yield ExportRow(item, stream.stats.rows_read, salvaged)
                self._headers = _headers_seen(stream)
                self.unknown_systems = dict(stream.stats.unknown_identifier_systems)
        except ReaderError as exc:
            raise PatientsFileError(f"cannot read the patients file {self.path}: {exc}") from exc
        except OSError as exc:
            raise PatientsFileError(
                f"cannot read the patients file {self.path}: {exc.strerror}"
            ) from exc
        if not self.good_rows:
            raise PatientsFileError(
                f"the patients file {self.path} holds no readable patient rows "
                f"({self.bad_rows} unreadable); check --format"
            )

    def require_keys(self, any_keys: bool) -> None:
        """Refuse an export none of whose rows gave a match key, naming its columns."""
        if not any_keys:
            raise PatientsFileError(_no_identifier_message(self.path, self._headers))


def inspect_patients(
    path: Path,
    format: str = "auto",
    mapping_file: Path | None = None,
    facility: str | None = None,
    rows: int = 0,
) -> InspectReport:
    """What a check would read from the export (`breachmatch inspect`): counts, never values.

    Reads every row (or the first `rows`) through the same readers, mapping
    and normalisation as `read_patients`, and needs no connection at all.
    """
    mapping = load_mapping(mapping_file, facility)
    if not path.is_file():
        raise PatientsFileError(f"the patients file {path} does not exist (--patients)")
    try:
        return inspect(path, format, mapping, sample_rows=rows)
    except ReaderError as exc:
        raise PatientsFileError(f"cannot read the patients file {path}: {exc}") from exc


def _headers_seen(stream: RecordStream) -> tuple[list[str], list[str]]:
    """(all headers, unrecognised headers) of the tables read, safe to print."""
    found: list[str] = []
    unrecognised: list[str] = []
    for plan in stream.plans_seen.values():
        for decision in plan.decisions:
            name = display_name(decision.header)
            found.append(name)
            if decision.source == "unmapped":
                unrecognised.append(name)
    return found, unrecognised


def _no_identifier_message(path: Path, headers: tuple[list[str], list[str]]) -> str:
    found, unrecognised = headers
    columns = (
        f"columns found: {', '.join(found)}; not recognised: {', '.join(unrecognised) or 'none'}"
        if found
        else "no column headers were found (FHIR Patients without identifiers?)"
    )
    return (
        f"no row of {path} gave a usable identifier (cpr, ssn, mrn, email, phone, or name "
        f"with birth date) — {columns}. Tell breachmatch which column holds what with "
        '--map FILE, a JSON file like {"columns": {"Personnr": "cpr", "Fødselsdag": '
        '"birth_date", "Patientnr": "patient_id"}}'
    )
