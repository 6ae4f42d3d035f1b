"""Streaming readers for leak dumps and patient exports.

One entry point for every format ingest and the hospital CLI accept:

>>> with open_records(Path("dump.sql.gz")) as stream:   # doctest: +SKIP
...     for item in stream:
...         if isinstance(item, BadRow): ...             # reason + row number only
...         else: ...                                    # a PersonRecord
...     stream.stats, stream.bytes_read, stream.total_bytes

Formats: CSV/TSV (delimiter and encoding sniffed), JSON documents and JSON
lines (nested keys flattened to dotted paths), MySQL/PostgreSQL SQL dumps
(INSERT and COPY), FHIR R4 NDJSON Patients; inside gzip, bz2, xz or zip.
Column meaning comes from `breachmatch.columns`. Every record is accounted
for: ``stats.rows_read`` = clean + ``stats.repaired`` + ``stats.bad_rows``.
Module map:

* `containers` — input bytes, decompression, zip members
* `encoding`, `detect` — encoding, format, delimiter, SQL dialect sniffing
* `csv_reader`, `json_reader`, `sql_reader` (+ `sql_lexer`,
  `sql_literals`), `fhir_reader` (+ `fhir_patient`) — one per format
* `repair` — ragged CSV rows attributed to their columns, or refused
* `salvage` — identifiers recognisable by value in a bad row
* `stream` — `open_records` / `RecordStream`; `inspection` — `inspect`
"""

from breachmatch.readers.detect import FORMATS
from breachmatch.readers.encoding import check_encoding
from breachmatch.readers.inspection import ColumnReport, InspectReport, inspect
from breachmatch.readers.items import BadRow, RawRow, ReaderError
from breachmatch.readers.stream import MemberInfo, ReadStats, RecordStream, open_records

__all__ = [
    "FORMATS",
    "BadRow",
    "ColumnReport",
    "InspectReport",
    "MemberInfo",
    "RawRow",
    "ReadStats",
    "ReaderError",
    "RecordStream",
    "check_encoding",
    "inspect",
    "open_records",
]
