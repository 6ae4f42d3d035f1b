"""Leak dumps in every shape they circulate in, and hospital exports, from `synthetic` rows.

Each writer puts the same `LeakRow`s into one shape, spelt the way such
dumps spell things (each row's ``style`` picks its variant, so the output
depends only on the rows):

* ``csv`` — cp1252, ``;``, CRLF, Danish headers: what Excel saves on a
  Danish Windows. CPR numbers with and without a dash, phones in four
  spellings, upper-case e-mails, "Efternavn, Fornavn" names. Optionally
  *ragged* (the journal note, the last column, left unquoted although it
  holds a ``;``), *short* (trailing empty cells left out), with *fillers*
  (a placeholder row and a broken row) or a too-wide row every `bad_every`;
* ``xlsx`` — two sheets with a title block above the header row and typed
  cells: CPR numbers as numbers (so a day of 01–09 loses its zero), phones
  as integers, floats or with the country code, birth dates as date cells,
  serial numbers or text;
* ``jsonl`` — nested objects (``patient.kontakt.email``), nulls for gaps;
* ``sql`` — a MySQL dump, multi-row INSERTs, NULLs;
* ``fhir`` — R4 Patient NDJSON with the CPR under a chosen identifier system.

`HEALTH_DATA` says which shapes carry the health columns (a FHIR Patient
has none), which is all `synthetic.expected_matches` needs to know.
`write_dataset` puts a hospital, a leak and the truth into a directory.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from breachmatch_dev.synthetic import (
    DEMO_SEED,
    ExpectedMatch,
    LeakRow,
    Person,
    expected_matches,
    leak_rows,
)

SHAPES = ("csv", "xlsx", "jsonl", "sql", "fhir")
#: Whether a shape carries the health columns (diagnosis, medication, …).
HEALTH_DATA = {"csv": True, "xlsx": True, "jsonl": True, "sql": True, "fhir": False}
SUFFIX = {"csv": ".csv", "xlsx": ".xlsx", "jsonl": ".jsonl", "sql": ".sql", "fhir": ".ndjson"}

#: The CPR register's OID: the identifier system DK Core prescribes.
CPR_OID = "urn:oid:1.2.208.176.1.2"

LEAK_HEADERS = (
    "Navn", "CPR-nr.", "Fødselsdato", "Telefon", "E-mail", "Adresse",
    "Diagnose", "Medicin", "Henvisning", "Notat",
)  # fmt: skip
XLSX_HEADERS = (
    "Fornavn", "Efternavn", "CPR-nr.", "Fødselsdato", "Telefon", "E-mail", "Adresse",
    "Diagnose", "Medicin", "Henvisning", "Notat",
)  # fmt: skip
HOSPITAL_HEADERS = (
    "patient_id", "cpr", "first_name", "last_name", "birth_date", "email", "phone",
    "address", "language",
)  # fmt: skip
_FILLER_ROW = ("ukendt", "0000000000", "", "n/a", "test@test", "", "", "", "", "")
_BROKEN_ROW = ("Ødelagt; række", "xx")


def _variant(row: LeakRow, salt: int, choices: int) -> int:
    return random.Random(row.style * 31 + salt).randrange(choices)  # noqa: S311


def messy_cpr(row: LeakRow) -> str:
    cpr = row.person.cpr
    return (cpr, f"{cpr[:6]}-{cpr[6:]}", f"{cpr[:6]} {cpr[6:]}")[_variant(row, 1, 3)]


def messy_phone(row: LeakRow) -> str:
    phone = row.person.phone
    spaced = " ".join(phone[i : i + 2] for i in range(0, 8, 2))
    return (phone, f"+45 {spaced}", f"0045{phone}", f"+45{phone}")[_variant(row, 2, 4)]


def messy_email(row: LeakRow) -> str:
    return row.person.email.upper() if _variant(row, 3, 5) < 2 else row.person.email


def messy_name(row: LeakRow) -> str:
    p, style = row.person, _variant(row, 4, 10)
    if style < 3:
        return f"{p.family_name}, {p.given_name}"
    if style < 5:
        return f"{p.given_name} {p.family_name}".upper()
    return f"{p.given_name} {p.family_name}"


def messy_birth_date(row: LeakRow) -> str:
    return row.person.birth_date.strftime(("%d-%m-%Y", "%d.%m.%Y")[_variant(row, 5, 2)])


def _cells(row: LeakRow) -> list[str]:
    """The row under `LEAK_HEADERS`, messily spelt."""
    keys = row.keys
    named = "name_dob" in keys
    return [
        messy_name(row) if named else "",
        messy_cpr(row) if "cpr" in keys else "",
        messy_birth_date(row) if named else "",
        messy_phone(row) if "phone" in keys else "",
        messy_email(row) if "email" in keys else "",
        row.person.address if row.address else "",
        row.diagnosis,
        row.medication,
        row.referral,
        row.note,
    ]


def _csv_cell(text: str) -> str:
    if any(ch in text for ch in ';"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(
    rows: Iterable[LeakRow],
    sink: BinaryIO,
    *,
    ragged: bool = False,
    short: bool = False,
    fillers: bool = False,
    bad_every: int = 0,
) -> int:
    """The leak as a cp1252 ``;`` CSV; returns the data lines written.

    `ragged` leaves the last column unquoted, so a note holding a ``;``
    spills into an extra field; `short` leaves trailing empty cells out;
    `fillers` adds a placeholder row and a broken row; `bad_every` adds a
    too-wide row of fillers after every that many rows.
    """

    def line(cells: Iterable[str]) -> None:
        sink.write((";".join(cells) + "\r\n").encode("cp1252"))

    line(LEAK_HEADERS)
    written = 0
    for i, row in enumerate(rows, start=1):
        cells = [_csv_cell(c) for c in _cells(row)]
        if ragged:
            cells[-1] = row.note
        while short and len(cells) > 1 and not cells[-1]:
            cells.pop()
        line(cells)
        written += 1
        if bad_every and i % bad_every == 0:
            line(["Ukendt"] * (len(LEAK_HEADERS) + 3))
            written += 1
    if fillers:
        line(_FILLER_ROW)
        line(_csv_cell(c) for c in _BROKEN_ROW)
        written += 2
    return written


def _xlsx_values(row: LeakRow) -> list[object]:
    """The row under `XLSX_HEADERS` as typed cells (None: left empty)."""
    p, keys = row.person, row.keys
    named = "name_dob" in keys
    upper = _variant(row, 6, 5) == 0
    cpr: object = None
    if "cpr" in keys:
        cpr = (int(p.cpr), f"{p.cpr[:6]}-{p.cpr[6:]}", p.cpr)[_variant(row, 7, 3)]
    phone: object = None
    if "phone" in keys:
        phone = (
            int(p.phone),
            float(p.phone),
            int("45" + p.phone),
            f"+45 {p.phone[:4]} {p.phone[4:]}",
        )[_variant(row, 8, 4)]
    born: object = None
    if named:
        serial = (p.birth_date - dt.date(1899, 12, 30)).days
        born = (p.birth_date, serial, p.birth_date.strftime("%d.%m.%Y"))[_variant(row, 9, 3)]
    return [
        (p.given_name.upper() if upper else p.given_name) if named else None,
        p.family_name if named else None,
        cpr,
        born,
        phone,
        messy_email(row) if "email" in keys else None,
        p.address if row.address else None,
        row.diagnosis or None,
        row.medication or None,
        row.referral or None,
        row.note or None,
    ]


def write_xlsx(rows: Iterable[LeakRow], path: Path, *, title: str = "Patientliste") -> int:
    """The leak as a workbook: two sheets, title blocks, typed cells; returns data rows.

    The second sheet lists its columns in another order, so a reader must
    find each sheet's header on its own.
    """
    import xlsxwriter  # a dev-only dependency (requirements-dev.txt), for this writer alone

    data = list(rows)
    half = len(data) // 2
    order_2 = list(reversed(range(len(XLSX_HEADERS))))
    with xlsxwriter.Workbook(str(path)) as book:
        date_format = book.add_format({"num_format": "dd-mm-yyyy"})
        for name, part, order, title_rows in (
            ("Patienter", data[:half], list(range(len(XLSX_HEADERS))), [title, "", ""]),
            ("Patienter (forts.)", data[half:], order_2, [f"{title} (fortsat)"]),
        ):
            sheet = book.add_worksheet(name)
            for r, text in enumerate(title_rows):
                if text:
                    sheet.write_string(r, 0, text)
            top = len(title_rows)
            sheet.write_row(top, 0, [XLSX_HEADERS[c] for c in order])
            for r, row in enumerate(part, start=top + 1):
                values = _xlsx_values(row)
                for col, c in enumerate(order):
                    value = values[c]
                    if isinstance(value, dt.date):
                        sheet.write_datetime(r, col, value, date_format)
                    elif isinstance(value, int | float):
                        sheet.write_number(r, col, value)
                    elif value is not None:
                        sheet.write_string(r, col, str(value))
    return len(data)


def _json_document(row: LeakRow, n: int) -> dict[str, object]:
    p, keys = row.person, row.keys
    named = "name_dob" in keys
    return {
        "id": n,
        "patient": {
            "navn": {
                "fornavn": p.given_name if named else None,
                "efternavn": p.family_name if named else None,
            },
            "cpr": messy_cpr(row) if "cpr" in keys else None,
            "foedt": p.birth_date.isoformat() if named else None,
            "kontakt": {
                "email": messy_email(row) if "email" in keys else None,
                "telefon": messy_phone(row) if "phone" in keys else None,
            },
            "adresse": p.address if row.address else None,
        },
        "diagnose": row.diagnosis or None,
        "medicin": row.medication or None,
        "henvisning": row.referral or None,
        "notat": row.note or None,
    }


def write_jsonl(rows: Iterable[LeakRow], sink: BinaryIO, *, bad_every: int = 0) -> int:
    """UTF-8 JSON lines with nested objects; a truncated line after every `bad_every`."""
    written = 0
    for i, row in enumerate(rows, start=1):
        sink.write(json.dumps(_json_document(row, i), ensure_ascii=False).encode() + b"\n")
        written += 1
        if bad_every and i % bad_every == 0:
            sink.write(b'{"id": "broken", "patient": {"navn": \n')
    return written


def _sql_text(value: str | None) -> str:
    if not value:
        return "NULL"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _insert(tuples: list[str]) -> bytes:
    # A file for the reader under test, never executed anywhere.
    return f"INSERT INTO `patienter` VALUES {','.join(tuples)};\n".encode()  # noqa: S608


def write_sql(rows: Iterable[LeakRow], sink: BinaryIO, *, rows_per_insert: int = 50) -> int:
    """A MySQL dump: CREATE TABLE, then multi-row INSERTs with NULLs for empty fields."""
    sink.write(
        b"-- MySQL dump 10.13  Distrib 8.0.36\n"
        b"SET NAMES utf8mb4;\n"
        b"DROP TABLE IF EXISTS `patienter`;\n"
        b"CREATE TABLE `patienter` (\n  `id` int NOT NULL,\n  `fornavn` varchar(64),\n"
        b"  `efternavn` varchar(64),\n  `cpr_nr` varchar(11),\n  `foedt` date,\n"
        b"  `telefon` varchar(32),\n  `email` varchar(128),\n  `adresse` varchar(128),\n"
        b"  `diagnose` varchar(64),\n  `medicin` text,\n  `henvisning` text,\n  `notat` text\n"
        b") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
        b"LOCK TABLES `patienter` WRITE;\n"
    )
    tuples: list[str] = []
    written = 0
    for n, row in enumerate(rows, start=1):
        p, keys = row.person, row.keys
        named = "name_dob" in keys
        values = (
            p.given_name if named else None,
            p.family_name if named else None,
            messy_cpr(row) if "cpr" in keys else None,
            p.birth_date.isoformat() if named else None,
            messy_phone(row) if "phone" in keys else None,
            messy_email(row) if "email" in keys else None,
            p.address if row.address else None,
            row.diagnosis, row.medication, row.referral, row.note,
        )  # fmt: skip
        tuples.append(f"({n}," + ",".join(_sql_text(v) for v in values) + ")")
        written += 1
        if len(tuples) == rows_per_insert:
            sink.write(_insert(tuples))
            tuples.clear()
    if tuples:
        sink.write(_insert(tuples))
    sink.write(b"UNLOCK TABLES;\n")
    return written


def fhir_patient(
    person: Person,
    keys: Iterable[str],
    *,
    cpr_system: str,
    address: bool = True,
    extra_identifiers: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """An R4 Patient carrying `keys` of `person` (and the address, if `address`)."""
    keys = frozenset(keys)
    resource: dict[str, Any] = {"resourceType": "Patient", "id": person.patient_id}
    identifiers = [*extra_identifiers]
    if "cpr" in keys:
        identifiers.insert(0, {"use": "official", "system": cpr_system, "value": person.cpr})
    if identifiers:
        resource["identifier"] = identifiers
    if "name_dob" in keys:
        resource["name"] = [
            {"use": "official", "family": person.family_name, "given": [person.given_name]}
        ]
        resource["birthDate"] = person.birth_date.isoformat()
    telecom = []
    if "phone" in keys:
        telecom.append({"system": "phone", "value": person.phone_e164, "use": "mobile"})
    if "email" in keys:
        telecom.append({"system": "email", "value": person.email, "use": "home"})
    if telecom:
        resource["telecom"] = telecom
    if address:
        resource["address"] = [{"use": "home", "text": person.address}]
    resource["communication"] = [
        {"language": {"coding": [{"code": person.language}]}, "preferred": True}
    ]
    return resource


def write_fhir(rows: Iterable[LeakRow], sink: BinaryIO, *, cpr_system: str = CPR_OID) -> int:
    """The leak as FHIR R4 Patient NDJSON (a leaked FHIR server's bulk export)."""
    written = 0
    for row in rows:
        resource = fhir_patient(row.person, row.keys, cpr_system=cpr_system, address=row.address)
        sink.write(json.dumps(resource, ensure_ascii=False).encode() + b"\n")
        written += 1
    return written


def write_hospital_csv(hospital: Iterable[Person], sink: BinaryIO) -> None:
    """The hospital's own export: UTF-8, ``,``, English headers, clean values."""
    text = io.StringIO()
    text.write(",".join(HOSPITAL_HEADERS) + "\n")
    for p in hospital:
        cells = (
            p.patient_id, p.cpr, p.given_name, p.family_name, p.birth_date.isoformat(),
            p.email, p.phone, p.address, p.language,
        )  # fmt: skip
        text.write(",".join(f'"{c}"' if "," in c else c for c in cells) + "\n")
    sink.write(text.getvalue().encode("utf-8"))


def write_hospital_fhir(
    hospital: Iterable[Person],
    sink: BinaryIO,
    *,
    cpr_system: str = CPR_OID,
    local_system: str | None = None,
) -> None:
    """The hospital's export as FHIR NDJSON; `local_system` adds a local id in that system."""
    for p in hospital:
        extra = [{"system": local_system, "value": f"L{p.index}"}] if local_system else []
        resource = fhir_patient(p, ("cpr", "name_dob", "phone", "email"), cpr_system=cpr_system,
                                extra_identifiers=extra)  # fmt: skip
        sink.write(json.dumps(resource, ensure_ascii=False).encode() + b"\n")


@dataclass
class Dataset:
    """Files written by `write_dataset`, and the answer a check must give."""

    hospital_csv: Path
    leak: Path
    truth_json: Path
    patients: int
    leaked_rows: int
    expected: list[ExpectedMatch]
    #: The hospital's patients, for writing their export in another shape.
    hospital: list[Person]


def write_leak(rows: list[LeakRow], path: Path, shape: str, **options: Any) -> int:
    """Write `rows` in `shape` to `path`; returns the data rows written."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape; expected one of {', '.join(SHAPES)}")
    if shape == "xlsx":
        return write_xlsx(rows, path)
    with path.open("wb") as sink:
        if shape == "csv":
            return write_csv(rows, sink, **options)
        if shape == "jsonl":
            return write_jsonl(rows, sink, **options)
        if shape == "sql":
            return write_sql(rows, sink, **options)
        return write_fhir(rows, sink, **options)


def write_dataset(
    directory: Path,
    patients: int = 2000,
    leaked: int = 600,
    strangers: int = 400,
    *,
    seed: int = DEMO_SEED,
    shape: str = "csv",
    **options: Any,
) -> Dataset:
    """``hospital.csv``, ``leak.<shape>`` and ``truth.json`` in `directory`.

    `options` go to the shape's writer (for CSV: ``ragged``, ``short``,
    ``fillers``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    leak = leak_rows(patients, leaked, strangers, seed)
    hospital_csv = directory / "hospital.csv"
    with hospital_csv.open("wb") as sink:
        write_hospital_csv(leak.hospital, sink)
    leak_path = directory / f"leak{SUFFIX[shape]}"
    written = write_leak(leak.rows, leak_path, shape, **options)
    expected = expected_matches(leak, health=HEALTH_DATA[shape])
    truth_json = directory / "truth.json"
    truth_json.write_text(json.dumps([asdict(m) for m in expected], indent=1))
    return Dataset(hospital_csv, leak_path, truth_json, patients, written, expected, leak.hospital)
