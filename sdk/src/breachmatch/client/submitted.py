"""Which notice is which patient: the hospital's own record of what it submitted.

The notifier's ledger holds keyed references only (promise 5), so its status
answers carry the idempotency key, not the patient. The hospital can map a
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
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from breachmatch.v1 import outreach_pb2

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

    def record(self, items: Iterable[outreach_pb2.OutreachItem]) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows = [(i.idempotency_key, i.patient_ref, i.breach_id, now) for i in items]
        with self._connect() as db, db:
            db.executemany("INSERT OR IGNORE INTO submitted VALUES (?, ?, ?, ?)", rows)

    def patient_ids(self) -> dict[str, str]:
        """Idempotency key → patient id, for every notice this installation submitted."""
        with self._connect() as db:
            return dict(db.execute("SELECT idempotency_key, patient_id FROM submitted"))
