"""Typed spreadsheet cells as the strings a CSV export of the same sheet would hold.

A spreadsheet stores numbers and dates, not text, and Excel "helps" whoever
types an identifier into it: a CPR number typed into a General cell becomes
a number, so everybody born on the 1st to the 9th of a month loses the
leading zero (``0102031234`` → ``102031234``); a phone becomes an integer or
a float (``21345678.0``), losing its ``+`` or ``00`` prefix; a birth date
becomes a date cell, or a bare serial number when the column is not
formatted as a date. The identifier normalisers expect the text a person
would have typed, so each cell is turned back into it — and how depends on
what the column holds, which only the column mapping knows:

* ``cpr``: a whole number of 9 digits is zero-padded to 10 (a day of 01–09);
* ``phone``: a whole number; more than 8 digits means a country code was
  typed (Danish numbers have 8), so it gets back its ``+``;
* ``birth_date``: a date cell, or a number in Excel's serial-date range,
  becomes ``YYYY-MM-DD``;
* anything else: whole numbers without ``.0``, dates as ISO dates,
  date-times as ISO date-times, booleans as ``true``/``false``.

An MRN typed as a number has lost its leading zeros for good (the width is
not known); it is passed on as the number.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

#: What a spreadsheet library hands over for one cell.
Cell = str | int | float | bool | dt.date | dt.datetime | dt.time | dt.timedelta | None

_CPR_DIGITS = 10
_DANISH_PHONE_DIGITS = 8
# Excel's 1900 date system: serial 1 is 1900-01-01, but Excel counts a
# 29 February 1900 that never was, so from serial 61 on the epoch is
# 1899-12-30. Birth dates before March 1900 are not worth the special case.
_EXCEL_EPOCH = dt.date(1899, 12, 30)
_FIRST_SERIAL = 61
_LAST_SERIAL = 2_958_465  # 9999-12-31


def _whole(value: float) -> int | None:
    """`value` as an int when it is a whole number, else None."""
    if isinstance(value, int):
        return value
    if value.is_integer():
        return int(value)
    return None


def plain_text(value: Cell) -> str | None:
    """The text a CSV export would hold for `value`, whatever the column."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        whole = _whole(value)
        return str(whole) if whole is not None else repr(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    return str(value) if isinstance(value, dt.timedelta) else value.isoformat()


def cpr_text(value: Cell) -> str | None:
    """A CPR cell: a 9-digit number gets back the leading zero it lost."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        whole = _whole(value)
        if whole is not None and whole > 0:
            digits = str(whole)
            if len(digits) == _CPR_DIGITS - 1:
                return digits.zfill(_CPR_DIGITS)
            return digits
    return plain_text(value)


def phone_text(value: Cell) -> str | None:
    """A phone cell: a number longer than a Danish one had an international prefix."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        whole = _whole(value)
        if whole is not None and whole > 0:
            digits = str(whole)
            return "+" + digits if len(digits) > _DANISH_PHONE_DIGITS else digits
    return plain_text(value)


def birth_date_text(value: Cell) -> str | None:
    """A birth-date cell: date cells and Excel serial numbers as ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        whole = _whole(value)
        if whole is not None and _FIRST_SERIAL <= whole <= _LAST_SERIAL:
            return (_EXCEL_EPOCH + dt.timedelta(days=whole)).isoformat()
    return plain_text(value)


#: Record field → how its cells are read; every other column uses `plain_text`.
CONVERTERS: dict[str, Callable[[Cell], str | None]] = {
    "cpr": cpr_text,
    "phone": phone_text,
    "birth_date": birth_date_text,
}


def converter_for(field: str | None) -> Callable[[Cell], str | None]:
    """How to read the cells of a column mapped to `field` (None: unmapped)."""
    return CONVERTERS.get(field or "", plain_text)
