"""Every dump shape, end to end: generated with ground truth, ingested, checked, exactly right.

One stack for the module — the very stack `make demo` runs (`breachmatch_dev.stack`:
nats-server, matcher, notifier and ingest as processes, with the production
authentication) — and for each shape a fresh hospital and leak from the
project's generator (`breachmatch_dev.dumps`). The operator runs the ingest
CLI on the dump; the hospital runs ``breachmatch check`` on its export; the
matches must be exactly the generator's: every leaked patient, with every
key the row carried, its strength and its exposed categories, and nobody else.
Small on purpose (a few hundred rows each), so `make test` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from breachmatch_dev.demo import expected_matches, found_matches, run_tool
from breachmatch_dev.dumps import Dataset, write_dataset, write_hospital_fhir
from breachmatch_dev.stack import Stack, StackInfo

LOCAL_SYSTEM = "http://alles-laegehus.example/patientnr"


@dataclass(frozen=True)
class Case:
    shape: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Write the hospital's export as FHIR with this CPR system (None: CSV).
    hospital_fhir: str | None = None


CASES = {
    "csv": Case("csv", {"fillers": True}),
    "csv-short": Case("csv", {"short": True}),
    "csv-ragged": Case("csv", {"ragged": True}),
    "xlsx": Case("xlsx"),
    "jsonl": Case("jsonl"),
    "sql": Case("sql"),
    # The leak under one CPR system, the hospital's export under another.
    "fhir": Case(
        "fhir",
        {"cpr_system": "http://hl7.dk/fhir/core/NamingSystem/cpr"},
        hospital_fhir="http://ehealth.sundhed.dk/fhir/NamingSystem/cpr",
    ),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    stack = Stack(tmp_path_factory.mktemp("shapes-stack"))
    info = stack.up()
    yield info
    stack.down()


def _hospital(case: Case, data: Dataset) -> Path:
    if case.hospital_fhir is None:
        return data.hospital_csv
    path = data.hospital_csv.with_suffix(".ndjson")
    with path.open("wb") as sink:
        write_hospital_fhir(
            data.hospital, sink, cpr_system=case.hospital_fhir, local_system=LOCAL_SYSTEM
        )
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_each_shape_finds_exactly_the_leaked_patients_with_every_key(
    name: str, stack: StackInfo, tmp_path: Path
) -> None:
    case, seed = CASES[name], 100 + list(CASES).index(name)
    data = write_dataset(
        tmp_path, 240, 90, 60, seed=seed, shape=case.shape, **case.options
    )  # fmt: skip
    hospital = _hospital(case, data)
    breach_id = f"shape-{name}"
    report_path, results_path = tmp_path / "ingest.json", tmp_path / "results.json"
    run_tool(
        stack, "breachmatch-ingest", str(data.leak), "--breach-id", breach_id,
        "--title", f"Shape {name}", "--organisation", "Testklinikken", "--breach-date",
        "2025-09-01", "--json-report", str(report_path),
    )  # fmt: skip
    checked = run_tool(
        stack, "breachmatch", "check", "--patients", str(hospital), "--breach", breach_id,
        "--json", str(results_path), "--quiet",
    )  # fmt: skip

    report = json.loads(report_path.read_text())
    assert report["rows_read"] == data.leaked_rows
    # Only the generator's broken filler row may be unreadable (2 cells under 10 headers).
    assert sum(report["bad_rows"].values()) <= (1 if case.options.get("fillers") else 0)
    results = json.loads(results_path.read_text())
    assert found_matches(results) == expected_matches(data)
    assert len(results["matches"]) == len(data.expected) == 90
    if case.hospital_fhir is not None:
        assert "identifiers in systems breachmatch does not know" in checked.stderr
        assert f"{LOCAL_SYSTEM} (240)" in checked.stderr
