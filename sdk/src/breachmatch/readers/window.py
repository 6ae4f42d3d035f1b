"""Bounded views of a text stream for the parsers that cannot work line by line.

SQL statements and JSON documents span lines, so their parsers look at a
sliding `TextWindow`: text is read in chunks, consumed text is dropped when
the next chunk arrives, and a single unit (a row, a token) larger than the
window's limit raises `WindowFull` instead of growing memory with the dump.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

CHUNK_CHARS = 1 << 20
#: Largest single row/token/line a parser will hold (characters).
MAX_UNIT_CHARS = 32 << 20


class WindowFull(Exception):
    """One unit of the input is larger than `MAX_UNIT_CHARS`."""


class TextWindow:
    """``buf[pos:]`` is the unconsumed text; `more` appends the next chunk.

    After `more` the buffer is re-based (``pos`` becomes 0), so callers keep
    positions relative to ``pos``, never absolute ones across a `more`.
    """

    def __init__(self, text: TextIO, chunk: int = CHUNK_CHARS, limit: int = MAX_UNIT_CHARS) -> None:
        self._text = text
        self._chunk = chunk
        self._limit = limit
        self.buf = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Read another chunk; False (and nothing changes) at end of input."""
        if self.eof:
            return False
        if len(self.buf) - self.pos > self._limit:
            raise WindowFull
        data = self._text.read(self._chunk)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        return True

    def ensure(self, size: int) -> None:
        """Read until `size` characters are unconsumed or the input ends."""
        while len(self.buf) - self.pos < size and self.more():
            pass

    def discard_all_but(self, keep: int) -> None:
        """Mark everything but the last `keep` characters consumed (resynchronising)."""
        self.pos = max(self.pos, len(self.buf) - keep)


def iter_lines(text: TextIO, limit: int = MAX_UNIT_CHARS) -> Iterator[str | None]:
    """Lines of `text`; a line longer than `limit` is skipped and yields None."""
    readline = text.readline
    while True:
        line = readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(("\n", "\r")):
            while True:
                rest = readline(limit)
                if not rest or rest.endswith(("\n", "\r")):
                    break
            yield None
            continue
        yield line
