"""Junk in, counts out: no reader crashes on hostile or damaged input."""

from __future__ import annotations

import gzip
import io
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breachmatch.readers import FORMATS, BadRow, ReaderError, open_records
from breachmatch.records import PersonRecord

PREFIXES = [
    b"",
    b"\x1f\x8b\x08\x00",
    b"PK\x03\x04",
    b"BZh9",
    b"\xfd7zXZ\x00",
    b"\xef\xbb\xbf",
    b"[",
    b'{"patients": [',
    b'{"resourceType": "Patient", ',
    b"INSERT INTO `t` (`a`, `b`) VALUES (",
    b"COPY public.t (a, b) FROM stdin;\n",
    b"CREATE TABLE t (",
    b"Navn;CPR\n",
]
SQL_ALPHABET = "(),;'\"`\\\n\t $EN_utf8NULL0123abc{}[]:/*-#."
VALID = [
    b'Navn;CPR-nr.;E-mail\nAnne Test;010180-1234;a@example.dk\n"B;x";0202802345;\n',
    b"INSERT INTO p (navn, cpr) VALUES ('A\\'s','0101801234'),('B',NULL);\n"
    b"COPY p (navn, cpr) FROM stdin;\nC\t0303803456\n\\.\n",
    b'[{"name": "A", "contact": {"email": "a@example.dk"}}, {"cpr": "0101801234"}]',
    b'{"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.208.176.1.2", '
    b'"value": "0101801234"}], "telecom": [{"system": "email", "value": "a@example.dk"}]}\n',
]
REASON = re.compile(r"^[a-z0-9_]+$")
JUNK_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _drain(data: bytes, fmt: str) -> None:
    """Read everything; only ReaderError may escape, and counts must add up."""
    try:
        stream = open_records(io.BytesIO(data), fmt)
    except ReaderError:
        return
    with stream:
        records = bad = 0
        for item in stream:
            if isinstance(item, BadRow):
                assert REASON.match(item.reason)
                assert item.row >= 0
                bad += 1
            else:
                assert isinstance(item, PersonRecord)
                records += 1
        assert stream.stats.rows_read == records + bad
        assert stream.stats.bad_rows.total() == bad
        assert stream.bytes_read <= len(data)


@JUNK_SETTINGS
@given(
    prefix=st.sampled_from(PREFIXES), junk=st.binary(max_size=3000), fmt=st.sampled_from(FORMATS)
)
def test_random_bytes_never_crash_a_reader(prefix: bytes, junk: bytes, fmt: str) -> None:
    _drain(prefix + junk, fmt)


@JUNK_SETTINGS
@given(
    prefix=st.sampled_from(PREFIXES),
    text=st.text(alphabet=SQL_ALPHABET, max_size=400),
    fmt=st.sampled_from(FORMATS),
)
def test_structured_junk_never_crashes_a_reader(prefix: bytes, text: str, fmt: str) -> None:
    _drain(prefix + text.encode(), fmt)


@JUNK_SETTINGS
@given(
    valid=st.sampled_from(VALID),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
    compress=st.booleans(),
)
def test_damaged_real_files_never_crash(
    valid: bytes, cut: int, flips: list[tuple[int, int]], compress: bool
) -> None:
    data = bytearray(valid[: max(cut, 1)])
    for at, byte in flips:
        data[at % len(data)] = byte
    payload = bytes(data)
    if compress:
        packed = gzip.compress(payload)
        payload = packed[: max(len(packed) - cut % 7, 10)]
    _drain(payload, "auto")
