"""A synthetic Danish hospital and a leak that overlaps it, with ground truth.

The demo and the end-to-end tests need data that looks like the real thing —
a clean-ish hospital export on one side, an ugly leaked dump on the other
(semicolon CSV in cp1252 with Danish headers, CPR numbers with and without a
dash, phones in three spellings, upper-case e-mails, "Efternavn, Fornavn"
names, placeholders and broken rows) — and they need to know the right answer
without asking the code under test. So the generator records, for every
hospital patient that it put into the leak, exactly which identifiers it
copied there and which data categories the leaked row exposes.

All people are made up. CPR numbers use real date rules but serials are
random; e-mail domains are under ``example.dk`` / ``example.com``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

_GIVEN = [
    "Søren", "Mette", "Jørgen", "Anne", "Lars", "Kirsten", "Bjørn", "Hanne", "Mads",
    "Lærke", "Frederik", "Ida", "Rasmus", "Sofie", "Nikolaj", "Åse", "Morten", "Birgitte",
    "Jens", "Camilla", "Ole", "Signe", "Søs", "Emil", "Astrid", "Thøger", "Freja", "Kåre",
]  # fmt: skip
_FAMILY = [
    "Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen",
    "Sørensen", "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen",
    "Thomsen", "Møller", "Poulsen", "Østergaard", "Ærø", "Lindgård", "Bækgaard", "Holm",
]  # fmt: skip
_STREETS = ["Nørregade", "Vestergade", "Åboulevarden", "Søndergade", "Strandvejen", "Kæret"]
_TOWNS = ["2100 København Ø", "8000 Aarhus C", "5000 Odense C", "9000 Aalborg", "4000 Roskilde"]
_DIAGNOSES = ["DE11 type 2-diabetes", "DJ45 astma", "DF32 depression", "DI10 hypertension"]
_MEDICINE = ["Metformin 500 mg", "Salbutamol inh.", "Sertralin 50 mg", "Amlodipin 5 mg"]
_REFERRALS = ["Henvist til kardiologisk amb.", "Henvist til psykiatrien", "Henvist til øjenlæge"]
_JOURNAL = ["Kontrol, stabil.", "Blodprøver taget.", "Samtale om livsstil.", "Opfølgning aftalt."]

#: Leak header → key kind or data category it stands for.
LEAK_HEADERS = [
    "Navn", "CPR-nr.", "Fødselsdato", "Telefon", "E-mail", "Adresse",
    "Diagnose", "Medicin", "Henvisning", "Notat",
]  # fmt: skip
HOSPITAL_HEADERS = [
    "patient_id", "cpr", "first_name", "last_name", "birth_date", "email", "phone",
    "address", "language",
]  # fmt: skip


@dataclass
class Patient:
    patient_id: str
    cpr: str
    first_name: str
    last_name: str
    birth_date: date
    email: str
    phone: str  # 8 digits, Danish national number
    address: str
    language: str


@dataclass
class ExpectedMatch:
    patient_id: str
    matched_keys: list[str]
    strength: str
    categories: list[str]


@dataclass
class Dataset:
    hospital_csv: Path
    leak_csv: Path
    truth_json: Path
    patients: int
    leaked_rows: int
    expected: list[ExpectedMatch] = field(default_factory=list)


def _cpr(rng: random.Random, born: date) -> str:
    # 7th digit encodes the century together with the year (CPR rules):
    # 0-3 → 1900s; 4 and 9 → 2000s for years 00-36; 5-8 → 2000s for 00-57.
    year = born.year % 100
    if born.year < 2000:
        seventh = rng.choice("0123")
    elif year <= 36:
        seventh = rng.choice("49")
    else:
        seventh = rng.choice("5678")
    return f"{born:%d%m%y}{seventh}{rng.randrange(1000):03d}"


def _unique(draw: Callable[[], str], used: set[object]) -> str:
    """A value of ``draw`` nobody has yet.

    Real CPR numbers are unique, and a shared phone would match people the
    ground truth does not know about (and share one notice between two).
    """
    while (value := draw()) in used:
        pass
    used.add(value)
    return value


def _patient(rng: random.Random, index: int, used: set[object]) -> Patient:
    while True:
        born = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 90))
        given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
        if (given, family, born) not in used:
            used.add((given, family, born))
            break
    local = f"{given}.{family}{index}".lower().translate(str.maketrans("æøå", "eoa"))
    return Patient(
        patient_id=f"P{index:07d}",
        cpr=_unique(lambda: _cpr(rng, born), used),
        first_name=given,
        last_name=family,
        birth_date=born,
        email=f"{local}@example.dk",
        phone=_unique(lambda: f"{rng.randrange(20_000_000, 99_999_999)}", used),
        address=f"{rng.choice(_STREETS)} {rng.randrange(1, 200)}, {rng.choice(_TOWNS)}",
        language="en" if rng.random() < 0.1 else "da",
    )


def _messy_phone(rng: random.Random, phone: str) -> str:
    spaced = " ".join(phone[i : i + 2] for i in range(0, 8, 2))
    return rng.choice([phone, f"+45 {spaced}", f"0045{phone}", f"+45{phone}"])


def _messy_cpr(rng: random.Random, cpr: str) -> str:
    return rng.choice([cpr, f"{cpr[:6]}-{cpr[6:]}", f"{cpr[:6]} {cpr[6:]}"])


def _messy_name(rng: random.Random, p: Patient) -> str:
    style = rng.random()
    if style < 0.3:
        return f"{p.last_name}, {p.first_name}"
    if style < 0.5:
        return f"{p.first_name} {p.last_name}".upper()
    return f"{p.first_name} {p.last_name}"


def _leak_row(
    rng: random.Random, p: Patient, keys: set[str]
) -> tuple[list[str], set[str], list[str]]:
    """One leaked row for `p` carrying `keys`; returns (row, keys, categories)."""
    row = [""] * len(LEAK_HEADERS)
    categories: set[str] = set()
    if "name_dob" in keys:
        row[0] = _messy_name(rng, p)
        row[2] = rng.choice([f"{p.birth_date:%d-%m-%Y}", f"{p.birth_date:%d.%m.%Y}"])
    if "cpr" in keys:
        row[1] = _messy_cpr(rng, p.cpr)
        categories.add("national_id")
    if "phone" in keys:
        row[3] = _messy_phone(rng, p.phone)
        categories.add("contact")
    if "email" in keys:
        row[4] = p.email.upper() if rng.random() < 0.4 else p.email
        categories.add("contact")
    if rng.random() < 0.5:
        row[5] = p.address
        categories.add("contact")
    for column, values, category in (
        (6, _DIAGNOSES, "diagnoses"),
        (7, _MEDICINE, "medication"),
        (8, _REFERRALS, "referrals"),
        (9, _JOURNAL, "free_text"),
    ):
        if rng.random() < 0.45:
            row[column] = rng.choice(values)
            categories.add(category)
    return row, keys, sorted(categories)


def generate(
    directory: Path,
    patients: int = 2000,
    leaked_patients: int = 600,
    strangers: int = 400,
    seed: int = 2025,
) -> Dataset:
    """Write `hospital.csv`, `leak.csv` (cp1252, `;`) and `truth.json` into `directory`."""
    rng = random.Random(seed)  # noqa: S311 - reproducible made-up data, not secrets
    directory.mkdir(parents=True, exist_ok=True)
    used: set[object] = set()
    people = [_patient(rng, i, used) for i in range(1, patients + strangers + 1)]
    hospital, outsiders = people[:patients], people[patients:]

    hospital_csv = directory / "hospital.csv"
    with hospital_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HOSPITAL_HEADERS)
        for p in hospital:
            writer.writerow(
                [
                    p.patient_id, p.cpr, p.first_name, p.last_name, p.birth_date.isoformat(),
                    p.email, p.phone, p.address, p.language,
                ]
            )  # fmt: skip

    key_choices = [
        {"cpr", "name_dob", "phone", "email"},
        {"cpr"},
        {"email"},
        {"phone"},
        {"name_dob"},
        {"cpr", "email"},
        {"name_dob", "phone"},
    ]
    rows: list[list[str]] = []
    expected: list[ExpectedMatch] = []
    for p in rng.sample(hospital, leaked_patients):
        row, keys, categories = _leak_row(rng, p, set(rng.choice(key_choices)))
        rows.append(row)
        expected.append(
            ExpectedMatch(
                patient_id=p.patient_id,
                matched_keys=sorted(keys),
                strength="strong" if "cpr" in keys else "medium",
                categories=categories,
            )
        )
    for p in outsiders:
        rows.append(_leak_row(rng, p, {"cpr", "name_dob", "phone", "email"})[0])
    # The mess every real dump has: placeholders and a broken row.
    rows.append(["ukendt", "0000000000", "", "n/a", "test@test", "", "", "", "", ""])
    rows.append(["Ødelagt; række", "xx"])
    rng.shuffle(rows)

    leak_csv = directory / "leak.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(LEAK_HEADERS)
    writer.writerows(rows)
    leak_csv.write_bytes(buffer.getvalue().encode("cp1252"))

    expected.sort(key=lambda m: m.patient_id)
    truth_json = directory / "truth.json"
    truth_json.write_text(json.dumps([asdict(m) for m in expected], indent=1))
    return Dataset(hospital_csv, leak_csv, truth_json, patients, len(rows), expected)
