"""Invented Danish people, a leak that overlaps a hospital, and the exact right answer.

The one generator behind the demo, the end-to-end and ingest tests and the
benchmarks. Three layers:

* `people` — persons whose CPR number, phone, e-mail and name + birth date
  are **unique by construction**, not by luck: person *n* is placed by a
  seeded bijection of ``n`` over (birth date × given name × family name), so
  no two share a name and birthday; the CPR serial is derived from that
  placement (no two share a CPR, and no serial is ``0000`` or any other
  filler); the phone is a second bijection of ``n`` over eight-digit numbers
  (repeated-digit fillers excluded); the e-mail carries ``n``. Draw every
  population that must not overlap from one call (or with ``start``): up to
  ~20 million people, streaming, in constant memory.
* `LeakRow` / `leak_rows` — what a leaked row of one person carries: which
  match keys (a hospital patient's row carries a chosen subset; an outsider's
  all four), the address, health data, and how messily each value is spelt.
* `expected_matches` — the ground truth, computed from what each row carries
  and what the dump's columns mean (`breachmatch_dev.dumps` writes the dumps
  and says which categories each shape exposes), never from the code under
  test.

All people are made up; e-mail domains are under ``example.dk`` and
``example.com``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from breachmatch.records import Category, PersonRecord

GIVEN_NAMES = (
    "Søren", "Mette", "Jørgen", "Anne", "Lars", "Kirsten", "Bjørn", "Hanne", "Mads",
    "Lærke", "Frederik", "Ida", "Rasmus", "Sofie", "Nikolaj", "Åse", "Morten", "Birgitte",
    "Jens", "Camilla", "Ole", "Signe", "Ulla", "Emil", "Astrid", "Thøger", "Freja", "Kåre",
)  # fmt: skip
FAMILY_NAMES = (
    "Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen",
    "Sørensen", "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen",
    "Thomsen", "Møller", "Poulsen", "Østergaard", "Dalsgård", "Lindgård", "Bækgaard", "Holm",
)  # fmt: skip
_STREETS = ("Nørregade", "Vestergade", "Åboulevarden", "Søndergade", "Strandvejen", "Kæret")
_TOWNS = ("2100 København Ø", "8000 Aarhus C", "5000 Odense C", "9000 Aalborg", "4000 Roskilde")
DIAGNOSES = ("DE11 type 2-diabetes", "DJ45 astma", "DF32 depression", "DI10 hypertension")
MEDICATION = ("Metformin 500 mg", "Salbutamol inh.", "Sertralin 50 mg", "Amlodipin 5 mg")
REFERRALS = ("Henvist til kardiologisk amb.", "Henvist til psykiatrien", "Henvist til øjenlæge")
#: Journal notes; the ones with a ";" make an unquoted `;` CSV row ragged.
NOTES = (
    "Kontrol, stabil.",
    "Blodprøver taget; svar om 3 dage.",
    "Samtale om livsstil.",
    "Opfølgning aftalt; ring ved forværring.",
)
_ASCII = str.maketrans({"æ": "ae", "ø": "oe", "å": "aa", "Æ": "Ae", "Ø": "Oe", "Å": "Aa"})

#: Match key kinds a leaked row can carry.
KEY_KINDS = ("cpr", "email", "name_dob", "phone")
#: The key subsets a hospital patient's leaked row carries (drawn uniformly).
KEY_CHOICES: tuple[frozenset[str], ...] = tuple(
    frozenset(keys)
    for keys in (
        KEY_KINDS,
        ("cpr",),
        ("email",),
        ("phone",),
        ("name_dob",),
        ("cpr", "email"),
        ("name_dob", "phone"),
    )
)
_STRONG_KINDS = frozenset({"cpr"})

#: The seed of the demo's hospital and leak (`leak_rows`' default).
DEMO_SEED = 2025

_FIRST_BIRTH = date(1930, 1, 1)
_BIRTH_DAYS = (date(2019, 12, 31) - _FIRST_BIRTH).days + 1
_NAMES = len(GIVEN_NAMES) * len(FAMILY_NAMES)
#: How many distinct people `people` can make.
CAPACITY = _BIRTH_DAYS * _NAMES
_PHONE_FIRST, _PHONE_SPAN = 20_000_000, 80_000_000


@dataclass(frozen=True)
class Person:
    """One invented person, values in their canonical spelling."""

    index: int
    patient_id: str
    cpr: str  # ten digits
    given_name: str
    family_name: str
    birth_date: date
    email: str
    phone: str  # eight digits, a Danish national number
    address: str
    language: str

    @property
    def phone_e164(self) -> str:
        return "+45" + self.phone


def _coprime_multiplier(rng: random.Random, modulus: int) -> int:
    while True:
        candidate = rng.randrange(1, modulus)
        if math.gcd(candidate, modulus) == 1:
            return candidate


def _cpr(born: date, name_slot: int) -> str:
    """A CPR number for the `name_slot`-th person born on `born`: distinct per slot.

    The 7th digit must give the right century with the year (0–3: 1900s;
    4–9: 2000s up to 2036), and the serial runs 001–999 after it, never 000.
    """
    centuries = "0123" if born.year < 2000 else "456789"
    seventh = centuries[name_slot % len(centuries)]
    serial = 1 + (name_slot // len(centuries) * 7 + born.toordinal()) % 999
    number = f"{born:%d%m%y}{seventh}{serial:03d}"
    if len(set(number)) == 1:  # 111111-1111: a filler however real its date
        number = number[:7] + "000"  # serial 000 is never handed out above
    return number


def _phone(slot: int) -> str:
    """An eight-digit number; the eight repeated-digit fillers move to 1000000d."""
    number = str(_PHONE_FIRST + slot)
    if len(set(number)) == 1:
        number = f"1000000{number[0]}"
    return number


def people(count: int, seed: int = 1, *, start: int = 0) -> Iterator[Person]:
    """Persons ``start`` … ``start + count - 1`` of the population drawn with `seed`.

    Every identifier is unique across the whole population (see the module
    docstring); the rest (address, language) is drawn from `seed`.
    """
    if start + count > CAPACITY:
        raise ValueError(f"at most {CAPACITY:,} distinct people")
    shape = random.Random(seed)  # noqa: S311 - reproducible invented data, not secrets
    a, b = _coprime_multiplier(shape, CAPACITY), shape.randrange(CAPACITY)
    c, d = _coprime_multiplier(shape, _PHONE_SPAN), shape.randrange(_PHONE_SPAN)
    e = shape.randrange(1 << 32)
    for n in range(start, start + count):
        slot = (n * a + b) % CAPACITY
        day, name_slot = slot % _BIRTH_DAYS, slot // _BIRTH_DAYS
        given = GIVEN_NAMES[name_slot % len(GIVEN_NAMES)]
        family = FAMILY_NAMES[name_slot // len(GIVEN_NAMES)]
        born = _FIRST_BIRTH + timedelta(days=day)
        # The rest depends on (seed, n) alone, so a window drawn with `start`
        # holds the very same people; a multiplicative hash is enough for that.
        mix = (n * 2_654_435_761 + e) % (1 << 32)
        local = f"{given}.{family}.{n}".translate(_ASCII).lower()
        yield Person(
            index=n,
            patient_id=f"P{n:07d}",
            cpr=_cpr(born, name_slot),
            given_name=given,
            family_name=family,
            birth_date=born,
            email=f"{local}@{('example.dk', 'example.com')[mix >> 31]}",
            phone=_phone((n * c + d) % _PHONE_SPAN),
            address=f"{_STREETS[mix % len(_STREETS)]} {1 + (mix >> 8) % 199}, "
            f"{_TOWNS[(mix >> 16) % len(_TOWNS)]}",
            language="en" if (mix >> 20) % 10 == 0 else "da",
        )


@dataclass(frozen=True)
class LeakRow:
    """What one leaked row holds about `person` ("" where the dump left a cell empty)."""

    person: Person
    keys: frozenset[str]
    address: bool
    diagnosis: str = ""
    medication: str = ""
    referral: str = ""
    note: str = ""
    #: Drives how messily the values are spelt (see `breachmatch_dev.dumps`).
    style: int = 0

    def categories(self, *, health: bool = True) -> Category:
        """The categories this row exposes; `health` False for shapes without health data."""
        found = Category(0)
        if "cpr" in self.keys:
            found |= Category.NATIONAL_ID
        if self.keys & {"email", "phone"} or self.address:
            found |= Category.CONTACT
        if health:
            for text, category in (
                (self.diagnosis, Category.DIAGNOSES),
                (self.medication, Category.MEDICATION),
                (self.referral, Category.REFERRALS),
                (self.note, Category.FREE_TEXT),
            ):
                if text:
                    found |= category
        return found

    def record(self, *, health: bool = True) -> PersonRecord:
        """The record a correct reader makes of this row (canonical spellings)."""
        p, keys = self.person, self.keys
        named = "name_dob" in keys
        return PersonRecord(
            cpr=p.cpr if "cpr" in keys else None,
            email=p.email if "email" in keys else None,
            phone=p.phone if "phone" in keys else None,
            given_name=p.given_name if named else None,
            family_name=p.family_name if named else None,
            birth_date=p.birth_date.isoformat() if named else None,
            address=p.address if self.address else None,
            categories=self.categories(health=health),
        )

    def identifier_forms(self) -> list[str]:
        """Every spelling of this person's identifiers a leak scan must look for."""
        p = self.person
        return [
            p.cpr,
            f"{p.cpr[:6]}-{p.cpr[6:]}",
            f"{p.given_name} {p.family_name}",
            f"{p.family_name}, {p.given_name}",
            p.birth_date.strftime("%d-%m-%Y"),
            p.address,
            p.email,
            p.email.upper(),
            p.phone,
            p.phone_e164,
        ]


def _health(rng: random.Random) -> dict[str, str]:
    return {
        name: rng.choice(values) if rng.random() < 0.45 else ""
        for name, values in (
            ("diagnosis", DIAGNOSES),
            ("medication", MEDICATION),
            ("referral", REFERRALS),
            ("note", NOTES),
        )
    }


def leak_row(person: Person, keys: Iterable[str], rng: random.Random) -> LeakRow:
    """A leaked row of `person` carrying `keys`, with health data drawn from `rng`."""
    return LeakRow(
        person,
        frozenset(keys),
        address=rng.random() < 0.5,
        style=rng.randrange(1 << 30),
        **_health(rng),
    )


def crowd(count: int, seed: int = 1, *, start: int = 0) -> Iterator[LeakRow]:
    """`count` leaked rows of distinct people, each carrying all four keys (streaming)."""
    rng = random.Random(seed)  # noqa: S311
    for person in people(count, seed, start=start):
        yield leak_row(person, KEY_KINDS, rng)


@dataclass
class Leak:
    """A hospital, a leak overlapping it, and the rows in dump order."""

    hospital: list[Person]
    rows: list[LeakRow]
    #: patient_id → the row that leaked that hospital patient.
    leaked: dict[str, LeakRow] = field(default_factory=dict)


def leak_rows(patients: int, leaked: int, strangers: int, seed: int = DEMO_SEED) -> Leak:
    """`patients` hospital patients; `leaked` of them in the leak, plus `strangers` outsiders."""
    if leaked > patients:
        raise ValueError("cannot leak more patients than the hospital has")
    rng = random.Random(seed)  # noqa: S311
    everyone = list(people(patients + strangers, seed))
    hospital, outsiders = everyone[:patients], everyone[patients:]
    leak = Leak(hospital, [])
    for person in rng.sample(hospital, leaked):
        row = leak_row(person, rng.choice(KEY_CHOICES), rng)
        leak.rows.append(row)
        leak.leaked[person.patient_id] = row
    leak.rows += [leak_row(person, KEY_KINDS, rng) for person in outsiders]
    rng.shuffle(leak.rows)
    return leak


@dataclass(frozen=True)
class ExpectedMatch:
    patient_id: str
    matched_keys: list[str]
    strength: str
    categories: list[str]


def expected_matches(leak: Leak, *, health: bool = True) -> list[ExpectedMatch]:
    """One match per leaked hospital patient: its keys, strength and categories."""
    return [
        ExpectedMatch(
            patient_id=patient_id,
            matched_keys=sorted(row.keys),
            strength="strong" if row.keys & _STRONG_KINDS else "medium",
            categories=row.categories(health=health).names(),
        )
        for patient_id, row in sorted(leak.leaked.items())
    ]


def hospital_records(hospital: Sequence[Person]) -> list[PersonRecord]:
    """What a correct reader makes of the hospital export (every key, canonical spellings)."""
    return [
        PersonRecord(
            cpr=p.cpr,
            email=p.email,
            phone=p.phone,
            given_name=p.given_name,
            family_name=p.family_name,
            birth_date=p.birth_date.isoformat(),
            patient_id=p.patient_id,
            address=p.address,
            language=p.language,
        )
        for p in hospital
    ]
