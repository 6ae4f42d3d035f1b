"""Property-based fuzzing of every format and container: the counts always add up.

Each example writes a small dump in one format (CSV with ``;`` or ``,``,
TSV, a JSON document, JSON lines, a MySQL dump, FHIR NDJSON) from random
rows whose cells hold quotes, delimiters, newlines, NULs and Danish letters,
damages its bytes (inserts, deletions, replacements, a cut), packs it plain,
gzip, bz2, xz or in a zip (sometimes cut too), and reads it — sniffed or
with its format forced. Whatever comes in:

* nothing but `ReaderError` (a whole-input verdict, when opening) escapes;
* every item is counted once: rows read = records + bad rows, repaired ⊆
  records, salvaged = bad rows carrying a salvaged record;
* a bad row's repr never shows its cells;
* for quote-free CSV and for JSON lines read as such, rows read equals the
  physical records in the file exactly: one per non-blank line (minus the
  header).

Bounded to about a minute in all (`max_examples`), no deadlines.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import zipfile
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breachmatch.columns import looks_like_data
from breachmatch.readers import BadRow, ReaderError, RecordStream, open_records
from breachmatch.records import PersonRecord

HEADERS = ["Navn", "CPR-nr.", "E-mail", "Telefon", "Adresse", "Diagnose", "Notat", "Fødselsdato"]
CELL_CHARS = list("abcæøåÆ019 ,;\"\t|\r\n\x00@.-_\\'(){}[]")
DAMAGE_BYTES = [*b"\";,\t\n\r\x00{}[]()'\\", 0x81, 0xC3, 0xFF]
REASON = re.compile(r"^[a-z0-9_]+$")
LINE = re.compile(r"\r\n|\r|\n")
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

cells = st.one_of(
    st.text(alphabet=CELL_CHARS, max_size=12),
    st.sampled_from(["0101801234", "010180-1234", "a@example.dk", "+45 12345678", "1980-01-01"]),
)
rows = st.lists(st.lists(cells, min_size=1, max_size=6), max_size=20)
headers = st.lists(st.sampled_from(HEADERS), min_size=1, max_size=6, unique=True)


def _csv(header: list[str], body: list[list[str]], delimiter: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue().encode("utf-8")


def _objects(header: list[str], body: list[list[str]]) -> list[dict[str, object]]:
    return [dict(zip(header, row, strict=False)) for row in body]


def _sql(header: list[str], body: list[list[str]]) -> bytes:
    names = ", ".join(f"`{h}`" for h in header)
    tuples = ",".join(
        "(" + ",".join("'" + c.replace("\\", "\\\\").replace("'", "\\'") + "'" for c in row) + ")"
        for row in body
    )
    statement = f"INSERT INTO `p` ({names}) VALUES {tuples};\n" if body else ""  # noqa: S608
    return ("-- MySQL dump\nSET NAMES utf8mb4;\n" + statement).encode("utf-8")


def _fhir(body: list[list[str]]) -> bytes:
    lines = []
    for row in body:
        resource = {
            "resourceType": "Patient" if len(row) % 3 else "Observation",
            "identifier": [{"system": "urn:oid:1.2.208.176.1.2", "value": row[0]}],
            "telecom": [{"system": "email", "value": row[-1]}],
        }
        lines.append(json.dumps(resource, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def write(fmt: str, header: list[str], body: list[list[str]]) -> bytes:
    """A well-formed dump of `fmt` ("csv;", "csv,", "tsv", "json", "jsonl", "sql", "fhir")."""
    if fmt.startswith("csv"):
        return _csv(header, body, fmt[-1])
    if fmt == "tsv":
        return _csv(header, body, "\t")
    if fmt == "json":
        return json.dumps({"patients": _objects(header, body)}, ensure_ascii=False).encode()
    if fmt == "jsonl":
        lines = [json.dumps(o, ensure_ascii=False) for o in _objects(header, body)]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if fmt == "sql":
        return _sql(header, body)
    return _fhir(body)


@dataclass(frozen=True)
class Damage:
    at: int
    op: str
    byte: int

    def apply(self, data: bytearray) -> None:
        if not data:
            return
        at = self.at % len(data)
        if self.op == "insert":
            data.insert(at, self.byte)
        elif self.op == "delete":
            del data[at]
        else:
            data[at] = self.byte


damages = st.lists(
    st.builds(
        Damage,
        st.integers(0, 10_000),
        st.sampled_from(["insert", "delete", "replace"]),
        st.one_of(st.sampled_from(DAMAGE_BYTES), st.integers(0, 255)),
    ),
    max_size=5,
)


def pack(kind: str, payload: bytes, cut: int) -> bytes:
    """`payload` in container `kind`; ``cut`` > 0 also cuts that many bytes off the end."""
    if kind == "plain":
        packed = payload
    elif kind == "gzip":
        packed = gzip.compress(payload)
    elif kind == "bz2":
        packed = bz2.compress(payload)
    elif kind == "xz":
        packed = lzma.compress(payload)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("dump", payload)
            if kind == "zip2":
                archive.writestr("nested.gz", gzip.compress(payload))
        packed = buffer.getvalue()
    return packed[: max(len(packed) - cut, 1)] if cut else packed


@dataclass
class Drained:
    stream: RecordStream
    records: int
    bad: int


def drain(data: bytes, fmt: str = "auto", encoding: str | None = None) -> Drained | None:
    """Read everything, asserting the accounting; None when the input is refused as a whole."""
    try:
        stream = open_records(io.BytesIO(data), fmt, encoding=encoding)
    except ReaderError:
        return None
    records = bad = salvaged = 0
    with stream:
        for item in stream:
            if isinstance(item, BadRow):
                bad += 1
                salvaged += item.salvaged is not None
                assert REASON.match(item.reason)
                assert item.row >= 0
                assert "cells" not in repr(item)
            else:
                assert isinstance(item, PersonRecord)
                records += 1
        stats = stream.stats
        assert stats.rows_read == records + bad
        assert stats.bad_rows.total() == bad
        assert stats.salvaged == salvaged
        assert 0 <= stats.repaired.total() <= records
        assert stats.clean_rows == records - stats.repaired.total()
        if stream.container != "zip":  # zipfile reads the central directory more than once
            assert stream.bytes_read <= len(data)
    return Drained(stream, records, bad)


def _physical_rows(text: str, delimiter: str) -> int:
    """Non-blank lines (NULs removed), minus the first unless it looks like data."""
    lines = [line.replace("\x00", "") for line in LINE.split(text)]
    nonblank = [line for line in lines if line.strip()]
    if not nonblank:
        return 0
    header = not any(looks_like_data(cell) for cell in nonblank[0].split(delimiter))
    return len(nonblank) - header


@settings(FUZZ, max_examples=1200)
@given(
    fmt=st.sampled_from(["csv;", "csv,", "tsv", "json", "jsonl", "sql", "fhir"]),
    header=headers,
    body=rows,
    damage=damages,
    container=st.sampled_from(["plain", "gzip", "bz2", "xz", "zip", "zip2"]),
    cut=st.one_of(st.just(0), st.integers(1, 40)),
    forced=st.booleans(),
)
def test_any_dump_in_any_container_is_counted_row_by_row(
    fmt: str,
    header: list[str],
    body: list[list[str]],
    damage: list[Damage],
    container: str,
    cut: int,
    forced: bool,
) -> None:
    data = bytearray(write(fmt, header, body))
    for change in damage:
        change.apply(data)
    read_as = ("csv" if fmt.startswith("csv") else fmt) if forced else "auto"
    drain(pack(container, bytes(data), cut), read_as)


@FUZZ
@given(
    lines=st.lists(st.text(alphabet=list("ab;19@ \x00æ"), max_size=30), max_size=30),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_quote_free_csv_counts_every_physical_line(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    drained = drain(text.encode("latin-1"), "csv", encoding="latin-1")
    assert drained is not None
    delimiter = drained.stream.members[0].delimiter
    assert delimiter is not None
    assert drained.stream.stats.rows_read == _physical_rows(text, delimiter)


@FUZZ
@given(body=rows, header=headers, damage=damages)
def test_json_lines_count_every_non_blank_line(
    body: list[list[str]], header: list[str], damage: list[Damage]
) -> None:
    data = bytearray(write("jsonl", header, body))
    for change in damage:
        change.apply(data)
    drained = drain(bytes(data), "jsonl", encoding="latin-1")
    assert drained is not None
    lines = LINE.split(bytes(data).decode("latin-1"))
    assert drained.stream.stats.rows_read == sum(1 for line in lines if line.strip())
