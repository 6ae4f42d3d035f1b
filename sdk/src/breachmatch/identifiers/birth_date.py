"""Birth dates in the spellings dumps and exports use, to ISO 8601.

Accepted: ISO "YYYY-MM-DD" (also with "/" or "." and an optional time of day,
as SQL dumps print dates), day-first "DD-MM-YYYY", "DD.MM.YYYY" and
"DD/MM/YYYY" (Danish and European usage; US month-first is not guessed), and
eight digits as "YYYYMMDD" or "DDMMYYYY". The two eight-digit readings can
never both be valid dates in range: when YYYYMMDD has a real month and day,
the DDMMYYYY reading's year is that month and day (0101-1231), centuries
before the earliest accepted birth date.
Two-digit years are refused: their century is a guess.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time

from breachmatch.identifiers.errors import InvalidIdentifier, Placeholder, Reason
from breachmatch.identifiers.kinds import KeyKind
from breachmatch.identifiers.placeholders import is_placeholder_text

_YEAR_FIRST = re.compile(
    r"([0-9]{4})([-./])([0-9]{1,2})\2([0-9]{1,2})"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_DAY_FIRST = re.compile(r"([0-9]{1,2})([-./])([0-9]{1,2})\2([0-9]{4})")
_EIGHT_DIGITS = re.compile(r"[0-9]{8}")
_SEPARATORS = "-./"

#: No living person, nor any CPR number, is born earlier.
EARLIEST_BIRTH_DATE = dt.date(1858, 1, 1)
# Database defaults that stand for "unknown", not for a birthday.
_FILLER_DATES = frozenset({dt.date(1900, 1, 1)})
#: (monotonic deadline, date): the clock's date, asked again after the deadline.
_today: list[tuple[float, dt.date]] = [(0.0, dt.date.min)]


def today() -> dt.date:
    """The local date, read from the clock at most once a second.

    No one is born after today, which both this module and the CPR rules
    check once per row of a dump; ``date.today()`` costs more than the rest
    of that check. At midnight the answer lags the calendar by under a second.
    """
    deadline, date = _today[0]
    now = time.monotonic()
    if now >= deadline:
        date = dt.date.today()
        _today[0] = (now + 1.0, date)
    return date


@functools.lru_cache(maxsize=1 << 16)
def normalise_birth_date(raw: str) -> str:
    """The ISO date ("1980-02-29"); raises `InvalidIdentifier` or `Placeholder` (kind name_dob).

    Cached: a dump spells a few tens of thousands of dates over and over, and
    parsing one costs more than the rest of its name_dob key. Only successes
    are cached (a raised exception is not), and a date once in the past stays there.
    """
    text = raw.strip()
    # No filler word starts with a digit, as nearly every date does.
    if (not text[:1].isdigit() and is_placeholder_text(text)) or text.strip("0-./ ") == "":
        raise Placeholder(KeyKind.NAME_DOB)
    parts = _year_month_day(text)
    if parts is None:
        raise InvalidIdentifier(KeyKind.NAME_DOB, Reason.DOB_FORMAT)
    born = _date(*parts)
    if born is None:
        raise InvalidIdentifier(KeyKind.NAME_DOB, Reason.DOB_BAD_DATE)
    if born in _FILLER_DATES:
        raise Placeholder(KeyKind.NAME_DOB)
    if not EARLIEST_BIRTH_DATE <= born <= today():
        raise InvalidIdentifier(KeyKind.NAME_DOB, Reason.DOB_RANGE)
    return born.isoformat()


def _year_month_day(text: str) -> tuple[int, int, int] | None:
    if len(text) == 10 and text.isascii():
        # "DD-MM-YYYY" or "YYYY-MM-DD" (with "-", "." or "/"), as most dumps write
        # them, read by position: what the patterns below would read from them.
        if text[2] in _SEPARATORS and text[5] == text[2]:
            day, month, year = text[:2], text[3:5], text[6:]
            if (day + month + year).isdigit():
                return int(year), int(month), int(day)
        elif text[4] in _SEPARATORS and text[7] == text[4]:
            year, month, day = text[:4], text[5:7], text[8:]
            if (year + month + day).isdigit():
                return int(year), int(month), int(day)
    if match := _YEAR_FIRST.fullmatch(text):
        return int(match[1]), int(match[3]), int(match[4])
    if match := _DAY_FIRST.fullmatch(text):
        return int(match[4]), int(match[3]), int(match[1])
    if _EIGHT_DIGITS.fullmatch(text):
        year_first = (int(text[:4]), int(text[4:6]), int(text[6:]))
        if _date(*year_first) is not None and int(text[:4]) >= EARLIEST_BIRTH_DATE.year:
            return year_first
        return int(text[4:]), int(text[2:4]), int(text[:2])
    return None


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None
