"""Choosing a text encoding from a sample of bytes, and decoding with it.

Danish exports come as UTF-8 (with or without a BOM, from Excel "CSV UTF-8"),
cp1252 (Excel's plain "CSV" on Windows) or latin-1 (old Unix tools). They
differ only in bytes 0x80–0x9F, so the rule is:

1. a BOM decides (UTF-8 → ``utf-8-sig``, UTF-16 → ``utf-16``);
2. UTF-16 without a BOM (what some Windows tools write) shows itself by a
   NUL in every other byte — Latin-script text in UTF-16 has a zero high
   byte — at even offsets for big-endian, odd ones for little-endian;
3. a sample that is valid UTF-8 is UTF-8 (other 8-bit text almost never is);
4. otherwise cp1252, unless the sample holds a byte cp1252 leaves undefined
   (0x81, 0x8D, 0x8F, 0x90, 0x9D), which only latin-1 can be.

When the rule is wrong for a file, ``--encoding`` overrides it (`check_encoding`).

The sample is the first 64 KiB, so a later byte can still contradict it. The
decoders never stop a dump for that: UTF-8 replaces the bad bytes with U+FFFD
(that value then fails normalisation, as it should) and cp1252 decodes an
undefined byte as latin-1 does.
"""

from __future__ import annotations

import codecs
import io
from typing import TextIO

from breachmatch.readers.containers import MemberBytes
from breachmatch.readers.items import ReaderError

SAMPLE_BYTES = 64 * 1024

_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_CP1252_FALLBACK = "breachmatch-cp1252-as-latin1"


def _decode_as_latin1(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_CP1252_FALLBACK, _decode_as_latin1)

_ERROR_HANDLERS = {"cp1252": _CP1252_FALLBACK, "latin-1": "strict"}

#: Share of byte pairs with a NUL on one side (and almost none on the other)
#: that makes a sample UTF-16 without a BOM.
_UTF16_NUL_SHARE = 0.4
_UTF16_OTHER_SIDE = 0.05


def check_encoding(name: str) -> str:
    """The codec name for an ``--encoding`` override; `ReaderError` for an unknown one."""
    try:
        codec = codecs.lookup(name)
    except LookupError:
        raise ReaderError(f"unknown encoding {name!r} (--encoding)") from None
    if not getattr(codec, "_is_text_encoding", True):  # hex, base64, zlib, rot13 …
        raise ReaderError(f"{name!r} is not a text encoding (--encoding)")
    return codec.name


def _utf16_without_bom(sample: bytes) -> str | None:
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    even = sample[0 : 2 * pairs : 2].count(0)
    odd = sample[1 : 2 * pairs : 2].count(0)
    if odd >= pairs * _UTF16_NUL_SHARE and even <= pairs * _UTF16_OTHER_SIDE:
        return "utf-16-le"
    if even >= pairs * _UTF16_NUL_SHARE and odd <= pairs * _UTF16_OTHER_SIDE:
        return "utf-16-be"
    return None


def sniff_encoding(sample: bytes, complete: bool) -> str:
    """The encoding of a member whose first bytes are `sample`.

    `complete` says the sample is the whole member, so a multi-byte sequence
    cut at its end is an error rather than the start of the next chunk.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    utf16 = _utf16_without_bom(sample)
    if utf16 is not None:
        return utf16
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    if any(byte in sample for byte in _CP1252_UNDEFINED):
        return "latin-1"
    return "cp1252"


def decode_sample(sample: bytes, encoding: str) -> str:
    """The sample as text for sniffing (a cut character at the end is harmless)."""
    return sample.decode(encoding, errors=_ERROR_HANDLERS.get(encoding, "replace"))


def open_text(data: MemberBytes, encoding: str) -> TextIO:
    """A text stream over the member, universal newlines left to the parsers."""
    return io.TextIOWrapper(
        io.BufferedReader(data, buffer_size=SAMPLE_BYTES),
        encoding=encoding,
        errors=_ERROR_HANDLERS.get(encoding, "replace"),
        newline="",
    )
