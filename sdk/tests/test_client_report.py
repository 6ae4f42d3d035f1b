"""Reports: the stable JSON format (round trip), CSV rows, and the terminal table."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest

from breachmatch.client.errors import ConfigurationError
from breachmatch.client.report import (
    CSV_COLUMNS,
    load_json,
    render_status,
    render_summary,
    write_csv,
    write_json,
)
from breachmatch.client.results import BreachSummary, CheckResult, Match
from breachmatch.v1 import outreach_pb2

RESULT = CheckResult(
    tenant="hospital-a",
    patients_file="/exports/patients.csv",
    generated_at="2026-11-23T09:00:00Z",
    patients_checked=4,
    bad_rows=1,
    patients_without_keys=1,
    match_keys=11,
    evaluations=11,
    matches=(
        Match("P1", "leak-1", ("cpr", "email"), "strong", ("contact", "national_id")),
        Match("P2", "leak-1", ("phone",), "medium", ("contact",)),
    ),
    summaries=(
        BreachSummary(
            breach_id="leak-1",
            title="Clinic leak",
            organisation="Clinic",
            breach_date="2025-05-01",
            oprf_key_id="k1",
            patients_checked=4,
            patients_matched=2,
            strong=1,
            medium=1,
            categories={"contact": 2, "national_id": 1, "medication": 0},
        ),
    ),
)


def test_json_has_the_documented_shape_and_round_trips(tmp_path: Path):
    path = tmp_path / "out.json"
    write_json(RESULT, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert set(document) >= {"matches", "summary", "patients_file", "tenant"}
    assert document["matches"][0] == {
        "patient_id": "P1",
        "breach_id": "leak-1",
        "matched_keys": ["cpr", "email"],
        "strength": "strong",
        "categories": ["contact", "national_id"],
    }
    assert document["summary"]["breaches"][0]["patients_matched"] == 2
    assert load_json(path) == RESULT


def test_foreign_or_future_json_is_refused_with_advice(tmp_path: Path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"version": 2, "matches": []}))
    with pytest.raises(ConfigurationError, match="breachmatch check --json"):
        load_json(path)
    path.write_text("not json")
    with pytest.raises(ConfigurationError, match="not a JSON results file"):
        load_json(path)


def test_csv_has_one_row_per_match(tmp_path: Path):
    path = tmp_path / "out.csv"
    write_csv(RESULT, path)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["patient_id"], r["matched_keys"], r["categories"]) for r in rows] == [
        ("P1", "cpr;email", "contact;national_id"),
        ("P2", "phone", "contact"),
    ]


def test_summary_table_lists_counts_and_patients_unless_quiet():
    text = render_summary(RESULT)
    assert "Breach leak-1: Clinic leak" in text
    assert "strong (cpr/ssn/mrn)  1" in text
    assert "exposed: national_id" in text
    assert "exposed: medication" not in text
    assert "P2" in text
    quiet = render_summary(RESULT, show_patients=False)
    assert "P1" not in quiet
    assert "matched" in quiet


def test_status_table_names_states():
    statuses = [
        outreach_pb2.OutreachStatus(
            patient_ref="P1",
            breach_id="leak-1",
            state=outreach_pb2.OutreachStatus.STATE_SENT,
            channel="email",
            updated_at="2026-11-23T09:00:00Z",
        )
    ]
    text = render_status(statuses)
    assert "sent" in text.splitlines()[2]
    assert text.endswith("1 notices")
