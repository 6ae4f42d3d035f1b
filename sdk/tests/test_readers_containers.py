"""Compressed and archived input: gzip, bz2, xz, zip members, damage, progress."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from breachmatch.readers import BadRow, ReaderError, open_records

CSV = "Navn;CPR;E-mail\n" + "".join(f"Person {i};{i:010d};p{i}@example.dk\n" for i in range(2000))
SQL = "INSERT INTO p (navn, cpr) VALUES ('Zip Test','0909909999'),('Zap Test','0808808888');\n"
JSONL = '{"name": "Json Test", "ssn": "123-45-6789"}\n'


@pytest.mark.parametrize(
    ("kind", "compress"),
    [("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress)],
)
def test_compressed_input_is_unwrapped_and_progress_counts_compressed_bytes(
    tmp_path: Path, kind: str, compress: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "dump.bin"  # no telling extension: the magic bytes decide
    path.write_bytes(compress(CSV.encode("cp1252")))
    with open_records(path) as stream:
        assert stream.container == kind
        assert stream.members[0].format == "csv"
        records, bad = stream.read_all()
        assert stream.bytes_read == stream.total_bytes == path.stat().st_size
    assert not bad
    assert len(records) == 2000
    assert records[1999].email == "p1999@example.dk"


def _mark_encrypted(raw: bytearray, name: bytes) -> None:
    """Set the "encrypted" flag of one member (zipfile cannot write encrypted members)."""
    # (signature, flag offset, name length offset, name offset): local header, central entry
    for signature, flag_at, length_at, name_at in (
        (b"PK\x03\x04", 6, 26, 30),
        (b"PK\x01\x02", 8, 28, 46),
    ):
        start = raw.find(signature)
        while start >= 0:
            length = int.from_bytes(raw[start + length_at : start + length_at + 2], "little")
            if raw[start + name_at : start + name_at + length] == name:
                raw[start + flag_at] |= 0x1
            start = raw.find(signature, start + 4)


def _zip(path: Path, members: dict[str, bytes], encrypted: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.mkdir("export")
        for name, data in members.items():
            archive.writestr(name, data)
    raw = bytearray(path.read_bytes())
    for name in encrypted:
        _mark_encrypted(raw, name.encode())
    path.write_bytes(bytes(raw))


def test_every_zip_member_is_read_with_its_own_format(tmp_path: Path) -> None:
    path = tmp_path / "leak.zip"
    _zip(
        path,
        {
            "export/patients.csv": CSV.encode("utf-8-sig"),
            "export/db.sql.gz": gzip.compress(SQL.encode()),
            "__MACOSX/export/._patients.csv": b"\x00\x05\x16\x07junk",
            "export/us.ndjson": JSONL.encode(),
            "export/locked.csv": b"Navn\nX\n",
        },
        encrypted=("export/locked.csv",),
    )
    with open_records(path) as stream:
        records, bad = stream.read_all()
        assert stream.container == "zip"
        assert [(m.name, m.container, m.format) for m in stream.members] == [
            ("export/patients.csv", "zip", "csv"),
            ("export/db.sql.gz", "zip+gzip", "sql"),
            ("export/us.ndjson", "zip", "jsonl"),
            ("export/locked.csv", "zip", "unreadable"),
        ]
        assert stream.bytes_read >= path.stat().st_size // 2
    assert len(records) == 2003
    assert [r.cpr for r in records[2000:2002]] == ["0909909999", "0808808888"]
    assert records[2002].ssn == "123-45-6789"
    assert bad == [BadRow("zip_encrypted", 0, "export/locked.csv")]


def test_truncated_gzip_keeps_the_rows_before_the_damage(tmp_path: Path) -> None:
    whole = gzip.compress(CSV.encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with open_records(path) as stream:
        records, bad = stream.read_all()
    assert 0 < len(records) < 2000
    assert records[0].cpr == "0000000000"
    assert bad[-1] == BadRow("container_corrupt", 0, "")


def test_corrupt_zip_member_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "bad-crc.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("a.csv", "Navn;CPR\nA;0101801234\n")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"0101801234")
    raw[at : at + 10] = b"0202802345"  # content no longer matches the stored CRC
    path.write_bytes(bytes(raw))
    with open_records(path) as stream:
        _, bad = stream.read_all()
    assert bad == [BadRow("container_corrupt", 0, "a.csv")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + b"\x00" * 100, "not a readable zip archive"),
        (b"\x1f\x8b" + b"\xff" * 100, "not a readable gzip stream"),
        (b"BZh9" + b"\x00" * 100, "not a readable bz2 stream"),
    ],
)
def test_unreadable_containers_raise_a_reader_error(data: bytes, message: str) -> None:
    with pytest.raises(ReaderError, match=message):
        open_records(io.BytesIO(data))


def test_zip_on_a_pipe_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", "Navn\nA\n")
    read_end, write_end = os.pipe()
    os.write(write_end, buffer.getvalue())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, pytest.raises(ReaderError, match="seekable"):
        open_records(pipe)


def test_plain_pipe_streams_without_a_total(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, SQL.encode())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, open_records(pipe) as stream:
        records, _ = stream.read_all()
        assert stream.total_bytes is None
        assert stream.bytes_read == len(SQL)
    assert [r.full_name for r in records] == ["Zip Test", "Zap Test"]


def test_empty_archive_has_no_members(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    zipfile.ZipFile(path, "w").close()
    with open_records(path) as stream:
        assert stream.format == "empty"
        assert list(stream) == []


def test_a_callers_stream_is_left_open() -> None:
    source = io.BytesIO(SQL.encode())
    with open_records(source) as stream:
        stream.read_all()
    assert not source.closed


def test_a_zip_member_with_an_unsupported_compression_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "method.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("odd.csv", "Navn;CPR\nA;0101801234\n")
        archive.writestr("fine.csv", "Navn;CPR\nB;0202802345\n")
    raw = bytearray(path.read_bytes())
    for signature, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        struct.pack_into("<H", raw, raw.index(signature) + method_at, 99)  # the first member's
    path.write_bytes(bytes(raw))
    with open_records(path) as stream:
        records, bad = stream.read_all()
    assert bad == [BadRow("container_corrupt", 0, "odd.csv")]
    assert [r.cpr for r in records] == ["0202802345"]
