"""Ingest jobs and their checkpoints in the JetStream KV bucket ``ingest-jobs``.

A job is one dump becoming one filter. Its id is derived from everything that
determines the result — breach id, the dump's SHA-256 and size, OPRF key id,
reader format, column mapping, chunk size — so running the same command again
after a crash finds the same job and continues it: chunks below the
``chunks_enqueued`` checkpoint are not sent again, and every result already on
``INGEST_RESULT.<job>`` is reused. Dumps uploaded over gRPC arrive as a
stream whose digest is known only at the end, so those jobs get a random id
(and a crashed upload is simply uploaded again).

``attempt`` counts how often a job was (re)started from scratch: a finished
or failed job that is run again starts a new attempt, whose chunk dedup ids
differ from the last one's (see `queue`). Only a RUNNING job is resumed.

The record holds counts and states only; there is nothing in it that could
identify a person.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch_ingest.report import Report


class JobState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


#: Job ids are hex digits: a digest prefix (`DumpIdentity.job_id`) or random (`random_job_id`).
JOB_ID_LENGTH = 32
_JOB_ID = re.compile(f"[0-9a-f]{{{JOB_ID_LENGTH}}}")


@dataclass(frozen=True)
class DumpIdentity:
    """What makes two runs the same job (see the module docstring)."""

    breach_id: str
    dump_sha256: str
    dump_size: int
    key_id: str
    format: str
    mapping_sha256: str
    chunk_pairs: int
    #: ``--encoding`` ("" when sniffed): another decoding is another dump.
    encoding: str = ""

    def job_id(self) -> str:
        fields = asdict(self)
        if not self.encoding:
            del fields["encoding"]  # ids of jobs started before --encoding existed stay valid
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_LENGTH]


def is_job_id(text: str) -> bool:
    """Shaped like a `DumpIdentity.job_id` (and so safe as a KV key)."""
    return _JOB_ID.fullmatch(text) is not None


def digest_file(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a dump file, read once in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as dump:
        while block := dump.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def random_job_id() -> str:
    return secrets.token_hex(JOB_ID_LENGTH // 2)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    breach_id: str
    key_id: str
    attempt: int
    state: JobState
    #: ISO date stamped into the manifest; kept so a resumed job signs the same one.
    added_date: str
    chunks_enqueued: int = 0
    #: Known once the coordinator has read the whole dump.
    chunks_total: int | None = None
    chunks_collected: int = 0
    report: Report = field(default_factory=Report)
    error: str = ""
    body_sha256: str = ""
    #: The breach's publication version once the job succeeded.
    version: int = 0
    updated_at: str = field(default_factory=_now)

    def to_json(self) -> bytes:
        document: dict[str, Any] = asdict(self)
        document["report"] = self.report.to_dict()
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        document = json.loads(data)
        document["state"] = JobState(document["state"])
        document["report"] = Report.from_dict(document["report"])
        return cls(**document)


class JobStore:
    """Read and write job records; one writer per job (its coordinator)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await bus.key_value(js, bus.KV_INGEST_JOBS))

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            entry = await self._kv.get(job_id)
        except NotFoundError:  # never written, or deleted
            return None
        return JobRecord.from_json(entry.value) if entry.value else None

    async def save(self, record: JobRecord) -> JobRecord:
        stamped = replace(record, updated_at=_now())
        await self._kv.put(record.job_id, stamped.to_json())
        return stamped

    async def next_attempt(
        self, job_id: str, breach_id: str, key_id: str, added_date: str
    ) -> tuple[JobRecord, bool]:
        """The record to work on and whether it resumes a RUNNING one.

        A RUNNING record keeps its attempt, checkpoint and added date. Any
        other (finished, failed, none) gives a new attempt's record, which is
        *not* saved yet: the caller clears the old attempt's leftovers first.
        """
        existing = await self.get(job_id)
        if existing is not None and existing.state is JobState.RUNNING:
            return existing, True
        record = JobRecord(
            job_id=job_id,
            breach_id=breach_id,
            key_id=key_id,
            attempt=existing.attempt + 1 if existing else 1,
            state=JobState.RUNNING,
            added_date=added_date,
        )
        return record, False
