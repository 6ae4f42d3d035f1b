"""Opening the input: counting its bytes, unwrapping gzip/bz2/xz, walking zip members.

Every format reader consumes a `MemberBytes`: the decompressed bytes of one
file (the input itself, or one zip member), which can show its first bytes
for sniffing without consuming them and which turns a decompression failure
midway (a truncated .gz, a bad CRC) into a flag instead of an exception, so
the rows read before the damage still count. Only a container that cannot be
opened at all raises `ReaderError`.

Nothing is ever spooled to disk: zip members are streamed by `zipfile`, which
needs a seekable input (a file), so a zip arriving on a pipe is refused.
`zipfile` reads the whole central directory when an archive is opened and
gives up on all of it for one member it cannot describe (a zip version
newer than it supports, a name flagged UTF-8 that is not): such an archive
is refused with a message saying so, never with a traceback.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol

from breachmatch.readers.items import ReaderError
from breachmatch.readers.spreadsheet_reader import workbook_kind

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CORRUPT = "container_corrupt"
_UNNAMED = "(unnamed member)"
#: What decompressors and zipfile raise on damaged data.
_DAMAGE = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, struct.error)


class Readable(Protocol):
    """Anything bytes can be read from (files, decompressors, zip members)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def _open_gzip(data: MemberBytes) -> Readable:
    return gzip.GzipFile(fileobj=data, mode="rb")


def _open_bz2(data: MemberBytes) -> Readable:
    return bz2.BZ2File(data, mode="rb")


def _open_xz(data: MemberBytes) -> Readable:
    return lzma.LZMAFile(io.BufferedReader(data), mode="rb")


def _is_bz2(magic: bytes) -> bool:
    return magic[:3] == b"BZh" and b"1" <= magic[3:4] <= b"9"


#: (name, magic bytes test, opener) for the single-stream compressors.
_COMPRESSORS: tuple[tuple[str, Callable[[bytes], bool], Callable[[MemberBytes], Readable]], ...]
_COMPRESSORS = (
    ("gzip", lambda magic: magic[:2] == b"\x1f\x8b", _open_gzip),
    ("bz2", _is_bz2, _open_bz2),
    ("xz", lambda magic: magic[:6] == b"\xfd7zXZ\x00", _open_xz),
)


class CountingSource(io.RawIOBase):
    """The caller's input, counting every byte pulled from it (for progress bars).

    `read` is passed straight through (full reads, as `zipfile` expects) and
    seeking is delegated, so zip archives can be opened on it.
    """

    def __init__(self, inner: IO[bytes]) -> None:
        super().__init__()
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self.count += len(data)
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class MemberBytes(io.RawIOBase):
    """The bytes of one member: peekable at the start, damage recorded not raised."""

    def __init__(self, inner: Readable, error: str | None = None) -> None:
        super().__init__()
        self._inner = inner
        # read1 returns what one step of decompression yields, so damage
        # further on costs only that step's bytes, not a whole buffer's worth.
        self._read: Callable[[int], bytes] = getattr(inner, "read1", inner.read)
        self._head = b""
        self._served = 0
        self._exhausted = False
        #: Reason code when reading failed part-way (the member ends there).
        self.error = error

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._inner.close()
        super().close()

    def head(self, size: int) -> bytes:
        """Up to `size` bytes from the start, without consuming them."""
        while len(self._head) < size and not self._exhausted:
            chunk = self._pull(size - len(self._head))
            if not chunk:
                self._exhausted = True
            self._head += chunk
        return self._head[:size]

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])

    @property
    def fits_in_head(self) -> bool:
        """True when `head` has already seen the whole member."""
        return self._exhausted

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._served < len(self._head):
            data = self._head[self._served : self._served + len(view)]
            self._served += len(data)
        else:
            data = self._pull(len(view))
        view[: len(data)] = data
        return len(data)

    def _pull(self, size: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._read(size)
        except _DAMAGE:
            self.error = _CORRUPT
            return b""


@dataclass(frozen=True, slots=True)
class Member:
    """One file inside the input: its name ("" for a plain input) and bytes."""

    name: str
    container: str
    data: MemberBytes


def _unwrap(data: MemberBytes, outer: str) -> tuple[str, MemberBytes]:
    magic = data.head(8)
    for name, matches, opener in _COMPRESSORS:
        if matches(magic):
            kind = name if outer == "plain" else f"{outer}+{name}"
            return kind, MemberBytes(opener(data))
    return outer, data


def open_container(source: CountingSource) -> tuple[str, Iterator[Member]]:
    """The container kind ("plain", "gzip", "zip", …) and its members, lazily.

    Raises `ReaderError` when the input is a container that cannot be opened.
    """
    start = source.tell() if source.seekable() else 0
    probe = MemberBytes(source)
    if probe.head(4) in _ZIP_MAGIC:
        if not source.seekable():
            raise ReaderError("zip input must be a seekable file, not a stream")
        source.seek(start)
        archive = _open_zip(source)
        if workbook_kind(archive) is not None:  # an .xlsx or .ods is a zip, read as one file
            archive.close()
            source.seek(start)
            return "plain", iter((Member("", "plain", MemberBytes(source)),))
        return "zip", _zip_members(archive)
    kind, data = _unwrap(probe, "plain")
    if kind != "plain" and not data.head(1) and data.error is not None:
        raise ReaderError(f"input is not a readable {kind} stream")
    return kind, iter((Member("", kind, data),))


def _open_zip(source: CountingSource) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except NotImplementedError:
        raise ReaderError(
            "the zip archive needs a zip version this reader does not support; "
            "re-pack its files with a standard zip tool"
        ) from None
    except UnicodeDecodeError:
        raise ReaderError(
            "the zip archive has a member name marked UTF-8 that is not; "
            "re-pack its files with a standard zip tool"
        ) from None
    except (*_DAMAGE, ValueError):
        raise ReaderError("input is not a readable zip archive") from None


def _is_metadata(name: str) -> bool:
    """macOS archive litter: resource forks, not data."""
    return name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._")


def _zip_members(archive: zipfile.ZipFile) -> Iterator[Member]:
    with archive:
        for info in archive.infolist():
            name = info.filename or _UNNAMED
            if name.endswith("/") or _is_metadata(name):
                continue
            if info.flag_bits & 0x1:
                yield Member(name, "zip", MemberBytes(io.BytesIO(), "zip_encrypted"))
                continue
            try:
                opened = archive.open(info)
            except (*_DAMAGE, NotImplementedError, RuntimeError, ValueError):
                yield Member(name, "zip", MemberBytes(io.BytesIO(), _CORRUPT))
                continue
            with opened:
                kind, data = _unwrap(MemberBytes(opened), "zip")
                yield Member(name, kind, data)
