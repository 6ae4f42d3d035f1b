"""Choosing a text encoding from a sample of bytes, and decoding with it.

Danish exports come as UTF-8 (with or without a BOM, from Excel "CSV UTF-8"),
cp1252 (Excel's plain "CSV" on Windows) or latin-1 (old Unix tools). They
differ only in bytes 0x80–0x9F, so the rule is:

1. a BOM decides (UTF-8 → ``utf-8-sig``, UTF-16 → ``utf-16``);
2. a sample that is valid UTF-8 is UTF-8 (other 8-bit text almost never is);
3. otherwise cp1252, unless the sample holds a byte cp1252 leaves undefined
   (0x81, 0x8D, 0x8F, 0x90, 0x9D), which only latin-1 can be.

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

SAMPLE_BYTES = 64 * 1024

_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_CP1252_FALLBACK = "breachmatch-cp1252-as-latin1"


def _decode_as_latin1(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error(_CP1252_FALLBACK, _decode_as_latin1)

_ERROR_HANDLERS = {"cp1252": _CP1252_FALLBACK, "latin-1": "strict"}


def sniff_encoding(sample: bytes, complete: bool) -> str:
    """The encoding of a member whose first bytes are `sample`.

    `complete` says the sample is the whole member, so a multi-byte sequence
    cut at its end is an error rather than the start of the next chunk.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
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
