"""Which notice is which patient: the hospital's own record of what it submitted.

The notifier knows patients by opaque refs only (promise 5), and its ledger's
status answers carry just the idempotency key. The hospital can map a
key back — it made the key — but recomputing needs the results file and
the export. Instead `notify` records ``idempotency key → (patient id, breach
id)`` here, in the state directory (owner-only, like everything there), and
`status` reads it. Patient ids are the hospital's own handles, never
identifiers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from breachmatch.client.outreach import OutreachPlan

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS submitted ("
    " idempotency_key TEXT PRIMARY KEY, patient_id TEXT NOT NULL, breach_id TEXT NOT NULL,"
    " submitted_at TEXT NOT NULL) WITHOUT ROWID"
)


class SubmittedNotices:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(self.path)
        db.execute(_SCHEMA)
        return contextlib.closing(db)

    def record(self, plan: OutreachPlan) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = [
            (item.idempotency_key, patient_id, item.breach_id, now)
            for item, patient_id in zip(plan.items, plan.patient_ids, strict=True)
        ]
        with self._connect() as db, db:
            db.executemany("INSERT OR IGNORE INTO submitted VALUES (?, ?, ?, ?)", rows)

    def patient_ids(self) -> dict[str, str]:
        """Idempotency key → patient id, for every notice this installation submitted."""
        with self._connect() as db:
            return dict(db.execute("SELECT idempotency_key, patient_id FROM submitted"))
