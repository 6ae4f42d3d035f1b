"""From records to work-queue chunks: match keys, labels, fixed chunk boundaries.

Every match key of a record becomes one (OPRF input, label) pair, the label
being the record's exposure categories; the same token from several rows
gets the OR of their labels in the filter (the writer merges them).

Chunk boundaries depend only on the dump, the mapping and the chunk limits,
never on timing, so a resumed job cuts exactly the same chunks as the run it
continues and chunk *i* means the same pairs in both (the job id covers the
limits for that reason). This runs in the reader thread; it is plain,
blocking code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from breachmatch import logs
from breachmatch.columns import ColumnMapping
from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, ReadStats, open_records
from breachmatch.records import PersonRecord
from breachmatch_ingest.report import KeyTally, Report

log = logs.get_logger(__name__)

DEFAULT_CHUNK_PAIRS = 5000
#: Report read progress (bytes) every this many rows.
_PROGRESS_EVERY = 1000
#: Keeps a sealed chunk well below NATS' default 1 MiB message limit.
MAX_CHUNK_BYTES = 512 * 1024

#: What `read_dump` yields: records and bad rows, then the reader's final counts.
DumpItem = PersonRecord | BadRow | ReadStats


@dataclass(slots=True)
class PendingChunk:
    """Pairs of one chunk, before sealing."""

    index: int
    inputs: list[bytes] = field(default_factory=list)
    labels: bytearray = field(default_factory=bytearray)
    size: int = 0

    def __len__(self) -> int:
        return len(self.inputs)


def chunks_of(
    items: Iterable[DumpItem],
    report: Report,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> Iterator[PendingChunk]:
    """Cut the pairs of `items` into chunks of at most `chunk_pairs` pairs (and 512 KiB).

    `report` is brought up to date before each chunk is yielded and at the
    end, so it is complete once the iterator is. A bad row's identifiers
    salvaged by value give pairs like any record's.

    This loop runs once per row of the dump in the coordinator, the one part
    of ingest that does not scale out with workers, so it counts into a
    `KeyTally` and keeps the chunk's lists in locals.
    """
    if chunk_pairs < 1:
        raise ValueError("chunk_pairs must be at least 1")
    tally = KeyTally()
    keys_by_kind, rows_by_label = tally.keys, tally.rows_by_label
    chunk = PendingChunk(0)
    inputs, labels, size = chunk.inputs, chunk.labels, 0
    for item in items:
        if isinstance(item, BadRow):
            report.add_bad_row(item.reason)
            if item.salvaged is None:
                continue
            record = item.salvaged
            tally.salvaged += 1
        elif isinstance(item, ReadStats):
            report.add_read_stats(item)
            continue
        else:
            record = item
            tally.rows += 1
        extraction = match_keys(record)
        label = int(record.categories)
        if extraction.invalid or extraction.placeholders:
            tally.add(extraction, label)
        else:
            rows_by_label[label] += 1
        if not extraction.keys:
            if record is item:
                tally.rows_without_key += 1
            continue
        for key in extraction.keys:
            data = key.oprf_input()
            if len(inputs) >= chunk_pairs or size + len(data) > MAX_CHUNK_BYTES:
                chunk.size = size
                report.add_tally(tally)
                yield chunk
                chunk = PendingChunk(chunk.index + 1)
                inputs, labels, size = chunk.inputs, chunk.labels, 0
            inputs.append(data)
            labels.append(label)
            size += len(data) + 3
            keys_by_kind[key.kind] += 1
    chunk.size = size
    report.add_tally(tally)
    if inputs:
        yield chunk


def read_dump(
    source: Path | IO[bytes],
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    on_progress: Callable[[int], None] | None = None,
    encoding: str | None = None,
) -> Iterator[DumpItem]:
    """The records and bad rows of a dump, then the reader's `ReadStats`.

    Calls `on_progress(bytes read)` as it goes. `encoding` overrides the
    sniffed text encoding (``--encoding``).
    """
    with open_records(source, format, mapping, encoding) as stream:
        for n, item in enumerate(stream):
            yield item
            if on_progress is not None and n % _PROGRESS_EVERY == 0:
                on_progress(stream.bytes_read)
        if on_progress is not None:
            on_progress(stream.bytes_read)
        if stream.stats.unknown_identifier_systems:
            # System URIs are namespaces, not patient data (and pass display_name).
            log.warning(
                "FHIR identifiers in systems no rule maps were not used; map them in the "
                "mapping file's fhir.identifier_systems",
                patients_per_system=dict(stream.stats.unknown_identifier_systems),
            )
        yield stream.stats
