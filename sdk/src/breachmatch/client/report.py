"""Check results for people (a summary table) and for programs (JSON, CSV).

JSON format, version 1 — stable: fields may be added, none renamed or removed
without a new ``version``::

    {
      "version": 1,
      "generated_at": "2026-11-23T09:00:00Z",
      "tenant": "hospital-a",
      "patients_file": "/exports/patients.csv",
      "matches": [
        {"patient_id": "P0001", "breach_id": "alles-2025",
         "matched_keys": ["cpr", "email"], "strength": "strong",
         "categories": ["contact", "national_id", "medical_history"]}
      ],
      "summary": {
        "patients_checked": 130000, "bad_rows": 0, "patients_without_keys": 12,
        "match_keys": 498211, "evaluations": 0,
        "breaches": [
          {"breach_id": "alles-2025", "title": "…", "organisation": "…",
           "breach_date": "2025-05-01", "oprf_key_id": "k20261123-1a2b3c",
           "patients_checked": 130000, "patients_matched": 57, "strong": 50,
           "medium": 7, "categories": {"contact": 57, "national_id": 50}}
        ]
      }
    }

``matched_keys`` are key kinds (cpr, ssn, mrn, email, phone, name_dob) and
``categories`` data-category names; ``strength`` is "strong" when a cpr, ssn
or mrn key matched, else "medium" (review before acting). ``evaluations`` is
the number of blinded elements this run sent to the matcher.

CSV: one row per match, columns ``patient_id, breach_id, strength,
matched_keys, categories`` (lists joined with ";").

Neither report holds an identifier: patients appear by the hospital's own id.
Both are written owner-only (0600) and atomically, since who is in which
breach is itself sensitive.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from breachmatch.client.errors import ConfigurationError
from breachmatch.client.outreach import state_name
from breachmatch.client.results import BreachSummary, CheckResult, Match
from breachmatch.keys import write_secret_file
from breachmatch.v1 import outreach_pb2

FORMAT_VERSION = 1
CSV_COLUMNS = ("patient_id", "breach_id", "strength", "matched_keys", "categories")


def to_document(result: CheckResult) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "generated_at": result.generated_at,
        "tenant": result.tenant,
        "patients_file": result.patients_file,
        "matches": [
            {
                "patient_id": m.patient_id,
                "breach_id": m.breach_id,
                "matched_keys": list(m.matched_keys),
                "strength": m.strength,
                "categories": list(m.categories),
            }
            for m in result.matches
        ],
        "summary": {
            "patients_checked": result.patients_checked,
            "bad_rows": result.bad_rows,
            "patients_without_keys": result.patients_without_keys,
            "match_keys": result.match_keys,
            "evaluations": result.evaluations,
            "breaches": [
                {
                    "breach_id": s.breach_id,
                    "title": s.title,
                    "organisation": s.organisation,
                    "breach_date": s.breach_date,
                    "oprf_key_id": s.oprf_key_id,
                    "patients_checked": s.patients_checked,
                    "patients_matched": s.patients_matched,
                    "strong": s.strong,
                    "medium": s.medium,
                    "categories": dict(s.categories),
                }
                for s in result.summaries
            ],
        },
    }


def json_text(document: object) -> str:
    """A JSON document as the CLI writes it (to a file or stdout)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_json(result: CheckResult, path: Path) -> None:
    write_secret_file(path, json_text(to_document(result)))


def write_csv(result: CheckResult, path: Path) -> None:
    write_secret_file(path, csv_text(result))


def csv_text(result: CheckResult) -> str:
    """One row per match (`CSV_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for m in result.matches:
        writer.writerow(
            [
                m.patient_id,
                m.breach_id,
                m.strength,
                ";".join(m.matched_keys),
                ";".join(m.categories),
            ]
        )
    return buffer.getvalue()


def load_json(path: Path) -> CheckResult:
    """Read a results file written by `write_json` (for `breachmatch notify`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the results file {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path} is not a JSON results file of breachmatch check") from exc
    try:
        return _from_document(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{path} is not a breachmatch results file of version {FORMAT_VERSION} "
            "(write one with: breachmatch check --json FILE)"
        ) from exc


def _from_document(document: Any) -> CheckResult:
    if document["version"] != FORMAT_VERSION:
        raise ValueError("unsupported version")
    summary = document["summary"]
    return CheckResult(
        tenant=str(document["tenant"]),
        patients_file=str(document["patients_file"]),
        generated_at=str(document["generated_at"]),
        patients_checked=int(summary["patients_checked"]),
        bad_rows=int(summary["bad_rows"]),
        patients_without_keys=int(summary["patients_without_keys"]),
        match_keys=int(summary["match_keys"]),
        evaluations=int(summary["evaluations"]),
        matches=tuple(
            Match(
                patient_id=str(m["patient_id"]),
                breach_id=str(m["breach_id"]),
                matched_keys=tuple(str(k) for k in m["matched_keys"]),
                strength=str(m["strength"]),
                categories=tuple(str(c) for c in m["categories"]),
            )
            for m in document["matches"]
        ),
        summaries=tuple(
            BreachSummary(
                breach_id=str(s["breach_id"]),
                title=str(s["title"]),
                organisation=str(s["organisation"]),
                breach_date=str(s["breach_date"]),
                oprf_key_id=str(s["oprf_key_id"]),
                patients_checked=int(s["patients_checked"]),
                patients_matched=int(s["patients_matched"]),
                strong=int(s["strong"]),
                medium=int(s["medium"]),
                categories={str(k): int(v) for k, v in s["categories"].items()},
            )
            for s in summary["breaches"]
        ),
    )


def _table(headers: tuple[str, ...], rows: Iterable[tuple[str, ...]], indent: str = "  ") -> str:
    """A plain aligned text table (no colour, so logs and pipes stay readable)."""
    body = [tuple(headers), *rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    lines = [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in body
    ]
    lines.insert(1, indent + "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _match_row(m: Match) -> tuple[str, str, str, str]:
    return (m.patient_id, m.strength, ", ".join(m.matched_keys), ", ".join(m.categories))


def render_summary(result: CheckResult, show_patients: bool = True) -> str:
    """The terminal report: per breach, counts by strength and category, then the matches."""
    out = [
        f"Checked {result.patients_checked} patients from {result.patients_file} "
        f"as {result.tenant}: {result.match_keys} distinct match keys, "
        f"{result.evaluations} evaluated at the matcher this run.",
    ]
    if result.bad_rows or result.patients_without_keys:
        out.append(
            f"Skipped: {result.bad_rows} unreadable rows, "
            f"{result.patients_without_keys} patients without any usable identifier."
        )
    if not result.summaries:
        out.append("No breaches to check against.")
    for summary in result.summaries:
        out.append("")
        out.append(
            f"Breach {summary.breach_id}: {summary.title} "
            f"({summary.organisation}, {summary.breach_date})"
        )
        counts = [
            ("patients checked", str(summary.patients_checked)),
            ("matched", str(summary.patients_matched)),
            ("  strong (cpr/ssn/mrn)", str(summary.strong)),
            ("  medium only (review)", str(summary.medium)),
            *((f"  exposed: {name}", str(n)) for name, n in summary.categories.items() if n),
        ]
        out.append(_table(("", "patients"), counts))
        matches = result.matches_for(summary.breach_id)
        if show_patients and matches:
            out.append("")
            out.append(
                _table(
                    ("patient", "strength", "matched keys", "exposed categories"),
                    (
                        (
                            m.patient_id,
                            m.strength,
                            ", ".join(m.matched_keys),
                            ", ".join(m.categories),
                        )
                        for m in matches
                    ),
                )
            )
    return "\n".join(out)


def status_document(statuses: Sequence[outreach_pb2.OutreachStatus]) -> dict[str, Any]:
    """`breachmatch status --json`: the same notices as the table, one object each."""
    return {
        "version": FORMAT_VERSION,
        "notices": [
            {
                "patient_id": s.patient_ref or None,
                "breach_id": s.breach_id,
                "state": state_name(s),
                "channel": s.channel or None,
                "updated_at": s.updated_at,
                "detail": s.detail,
                "idempotency_key": s.idempotency_key,
            }
            for s in statuses
        ],
    }


def render_status(statuses: Sequence[outreach_pb2.OutreachStatus]) -> str:
    """The `breachmatch status` table: one line per notice, patients by id only.

    A notice submitted from another installation has no known patient id; it
    is shown by the start of its idempotency key.
    """
    rows = [
        (
            s.patient_ref or f"? ({s.idempotency_key[:12]})",
            s.breach_id,
            state_name(s),
            s.channel or "-",
            s.updated_at,
            s.detail,
        )
        for s in statuses
    ]
    table = _table(("patient", "breach", "state", "channel", "updated", "detail"), rows, "")
    return f"{table}\n{len(rows)} notices"
