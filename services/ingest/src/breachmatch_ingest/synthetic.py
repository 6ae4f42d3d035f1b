"""Synthetic leak dumps with the traps real ones have, for tests, benchmarks and demos.

Real dumps cannot be used outside an incident, and hand-written fixtures are
too tidy. These generators write the same invented people as a cp1252
semicolon CSV with Danish headers (what Excel on a Danish Windows saves), as
JSON lines with nested objects, and as a MySQL dump with NULLs, and mix in
what ingest must survive: CPR numbers with and without the dash, phones in
three spellings, upper-case e-mails and names, placeholder values, and a few
unreadable rows.

Every person also knows what a correct reader must make of them
(`SyntheticPerson.record`), so a test can compute the match keys and expected
label independently of the pipeline under test, and which strings must never
appear anywhere after ingest (`SyntheticPerson.identifier_forms`). All
values are invented; CPR numbers are well-formed but drawn at random. The
output depends only on the seed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from breachmatch.records import Category, PersonRecord

_GIVEN = (
    "Jens", "Søren", "Mette", "Åse", "Bjørn", "Kirsten", "Anders", "Lærke", "Mads", "Signe",
    "Niels", "Ida", "Frederik", "Astrid", "Mikkel", "Freja", "Jørgen", "Birgitte", "Ænne", "Kåre",
)  # fmt: skip
_FAMILY = (
    "Hansen", "Jørgensen", "Sørensen", "Møller", "Kjær", "Østergaard", "Nielsen", "Pedersen",
    "Andersen", "Christensen", "Larsen", "Rasmussen", "Poulsen", "Thomsen", "Bæk", "Dalsgård",
)  # fmt: skip
_STREETS = ("Vestergade", "Østerbrogade", "Nørregade", "Søndergade", "Åboulevarden", "Algade")
_TOWNS = ("8000 Aarhus C", "2100 København Ø", "5000 Odense C", "9000 Aalborg", "7100 Vejle")
_JOURNAL = (
    "Kontrol af blodtryk, velreguleret.",
    "Ses for smerter i knæ; røntgen bestilt.",
    "Samtale om søvnproblemer og stress.",
)
_REFERRAL = ("Henvist til kardiologisk afd.", "Henvist til psykiatrisk udredning.")
_MEDICATION = ("Metformin 500 mg x 2", "Sertralin 50 mg", "Ibuprofen 400 mg ved behov")
_DIAGNOSIS = ("DE119", "DF329", "DI109", "DM179")
_TRANSLIT = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", "Æ": "Ae", "Ø": "Oe", "Å": "Aa"})

CSV_HEADER = (
    "Fornavn", "Efternavn", "CPR-nr.", "Fødselsdato", "Telefon", "E-mail", "Adresse",
    "Journal", "Henvisning", "Medicin",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticPerson:
    """One invented patient, with values as the dump spells them ("" = left empty)."""

    given_name: str
    family_name: str
    cpr: str
    birth_date: dt.date
    phone: str
    email: str
    address: str
    journal: str
    referral: str
    medication: str
    diagnosis: str

    @property
    def cpr_digits(self) -> str:
        return self.cpr.replace("-", "")

    @property
    def phone_e164(self) -> str:
        digits = "".join(ch for ch in self.phone if ch.isdigit())
        return "+45" + digits[-8:]

    def record(self, *, sql: bool = False) -> PersonRecord:
        """What a correct reader makes of this person's row in a dump of this module.

        The SQL dump has diagnosis and medication columns; the CSV and JSON
        dumps have journal, referral and medication.
        """
        categories = Category.NATIONAL_ID | Category.CONTACT
        for text, category in (
            ("" if sql else self.journal, Category.MEDICAL_HISTORY),
            ("" if sql else self.referral, Category.REFERRALS),
            (self.medication, Category.MEDICATION),
            (self.diagnosis if sql else "", Category.DIAGNOSES),
        ):
            if text:
                categories |= category
        return PersonRecord(
            cpr=self.cpr,
            given_name=self.given_name,
            family_name=self.family_name,
            birth_date=self.birth_date.isoformat(),
            phone=self.phone or None,
            email=self.email or None,
            address=self.address,
            categories=categories,
        )

    def identifier_forms(self) -> list[str]:
        """Every spelling of this person's identifiers a leak scan must look for."""
        forms = [
            self.cpr_digits,
            f"{self.cpr_digits[:6]}-{self.cpr_digits[6:]}",
            f"{self.given_name} {self.family_name}",
            self.birth_date.strftime("%d-%m-%Y"),
            self.address,
        ]
        if self.email:
            forms += [self.email, self.email.lower()]
        if self.phone:
            forms += [self.phone, self.phone_e164, self.phone_e164[3:]]
        return forms


def people(count: int, seed: int = 1, *, distinct: bool = True) -> Iterator[SyntheticPerson]:
    """`count` people; with `distinct`, no two share a CPR, phone, e-mail or name + birthday.

    Benchmarks of millions of rows pass ``distinct=False`` to skip the bookkeeping.
    """
    rng = random.Random(seed)  # noqa: S311 (invented data, reproducible by design)
    seen: set[str] = set()
    made = 0
    while made < count:
        person = _person(rng, made)
        if distinct:
            keys = {person.cpr_digits, person.phone_e164, person.email.lower()}
            keys.add(f"{person.given_name.lower()}|{person.family_name}|{person.birth_date}")
            if keys & seen:
                continue
            seen |= keys
        made += 1
        yield person


def _person(rng: random.Random, n: int) -> SyntheticPerson:
    born = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(365 * 85))
    seventh = rng.randrange(4) if born.year < 2000 else rng.randrange(5, 9)
    cpr = f"{born:%d%m%y}{seventh}{rng.randrange(1000):03d}"
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    local = f"{given}.{family}{n}".translate(_TRANSLIT).lower()
    email = f"{local}@{rng.choice(('example.dk', 'mail.example.com'))}"
    digits = f"{rng.randrange(2, 10)}{rng.randrange(10**7):07d}"
    return SyntheticPerson(
        given_name=given.upper() if rng.random() < 0.1 else given,
        family_name=family,
        cpr=f"{cpr[:6]}-{cpr[6:]}" if rng.random() < 0.5 else cpr,
        birth_date=born,
        phone=rng.choice(
            (
                f"+45 {digits[:2]} {digits[2:4]} {digits[4:6]} {digits[6:]}",
                digits,
                f"0045 {digits[:4]} {digits[4:]}",
            )
        ),
        email=email.upper() if rng.random() < 0.2 else email,
        address=f"{rng.choice(_STREETS)} {rng.randrange(1, 200)}, {rng.choice(_TOWNS)}",
        journal=rng.choice(_JOURNAL) if rng.random() < 0.7 else "",
        referral=rng.choice(_REFERRAL) if rng.random() < 0.3 else "",
        medication=rng.choice(_MEDICATION) if rng.random() < 0.5 else "",
        diagnosis=rng.choice(_DIAGNOSIS) if rng.random() < 0.4 else "",
    )


def _csv_cell(text: str) -> str:
    """Quote a cell holding the delimiter, a quote or a comma (as Excel does)."""
    if any(ch in text for ch in ';",'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(crowd: Iterable[SyntheticPerson], sink: BinaryIO, bad_every: int = 0) -> None:
    """cp1252, ';'-separated, Danish headers, CRLF; a too-wide row after every `bad_every`."""
    sink.write((";".join(CSV_HEADER) + "\r\n").encode("cp1252"))
    for i, p in enumerate(crowd, start=1):
        cells = (
            p.given_name, p.family_name, p.cpr, p.birth_date.strftime("%d-%m-%Y"), p.phone,
            p.email, p.address, p.journal, p.referral, p.medication,
        )  # fmt: skip
        line = ";".join(_csv_cell(cell) for cell in cells) + "\r\n"
        if bad_every and i % bad_every == 0:
            line += ";".join(["Ukendt"] * (len(CSV_HEADER) + 3)) + "\r\n"
        sink.write(line.encode("cp1252"))


def _json_document(p: SyntheticPerson, n: int) -> dict[str, object]:
    return {
        "id": n,
        "patient": {
            "navn": {"fornavn": p.given_name, "efternavn": p.family_name},
            "cpr": p.cpr,
            "foedt": p.birth_date.isoformat(),
            "kontakt": {"email": p.email, "telefon": p.phone},
            "adresse": p.address,
        },
        "journal": p.journal or None,
        "henvisning": p.referral or None,
        "medicin": p.medication or None,
    }


def write_jsonl(crowd: Iterable[SyntheticPerson], sink: BinaryIO, bad_every: int = 0) -> None:
    """UTF-8 JSON lines with nested objects; a truncated line after every `bad_every`."""
    for i, p in enumerate(crowd, start=1):
        sink.write(json.dumps(_json_document(p, i), ensure_ascii=False).encode("utf-8") + b"\n")
        if bad_every and i % bad_every == 0:
            sink.write(b'{"id": "broken", "patient": {"navn": \n')


def _sql_text(value: str) -> str:
    if not value:
        return "NULL"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _insert(tuples: list[str]) -> bytes:
    # A file for the reader under test, never executed anywhere.
    return f"INSERT INTO `patienter` VALUES {','.join(tuples)};\n".encode()  # noqa: S608


def write_sql(crowd: Iterable[SyntheticPerson], sink: BinaryIO, rows_per_insert: int = 50) -> None:
    """A MySQL dump: CREATE TABLE, then multi-row INSERTs with NULLs for empty fields."""
    sink.write(
        b"-- MySQL dump 10.13  Distrib 8.0.36\n"
        b"SET NAMES utf8mb4;\n"
        b"DROP TABLE IF EXISTS `patienter`;\n"
        b"CREATE TABLE `patienter` (\n  `id` int NOT NULL,\n  `fornavn` varchar(64),\n"
        b"  `efternavn` varchar(64),\n  `cpr_nr` varchar(11),\n  `foedt` date,\n"
        b"  `telefon` varchar(32),\n  `email` varchar(128),\n  `adresse` varchar(128),\n"
        b"  `diagnose` varchar(16),\n  `medicin` text,\n  `notat` text\n"
        b") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n"
        b"LOCK TABLES `patienter` WRITE;\n"
    )
    tuples: list[str] = []
    for n, p in enumerate(crowd, start=1):
        values = (
            p.given_name, p.family_name, p.cpr, p.birth_date.isoformat(), p.phone, p.email,
            p.address, p.diagnosis, p.medication, "",
        )  # fmt: skip
        tuples.append(f"({n}," + ",".join(_sql_text(v) for v in values) + ")")
        if len(tuples) == rows_per_insert:
            sink.write(_insert(tuples))
            tuples.clear()
    if tuples:
        sink.write(_insert(tuples))
    sink.write(b"UNLOCK TABLES;\n")
