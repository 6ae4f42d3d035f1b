"""Breach ids: one pattern, checked wherever an id meets a path, a subject or a key.

A breach id arrives from outside (an operator's flag, a hospital's request,
an event on NATS) and ends up in file names, object names, KV keys and
subjects. Only plain ids are valid: a letter or digit first, then at most
127 of ``[A-Za-z0-9._-]``, so ``..``, ``/``, NUL, spaces and subject syntax
(``*``, ``>``) can never be part of one. `path_in` adds the second line of
defence for the file system: the path built from an id is compared
*resolved* with its folder, so even a symlink planted in the folder cannot
lead a delete or a write outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The one valid shape of a breach id.
BREACH_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BREACH_ID_RULE = "1-128 of [A-Za-z0-9._-], starting with a letter or digit"


class BreachIdError(ValueError):
    """Not a valid breach id, or a path built from one would leave its folder.

    The message quotes at most a short, escaped prefix of the id: it came
    from outside and may be crafted to mislead a terminal or a log reader.
    """


def is_breach_id(text: str) -> bool:
    return BREACH_ID_PATTERN.fullmatch(text) is not None


def check_breach_id(text: str) -> str:
    """`text` if it is a valid breach id, else `BreachIdError`."""
    if not is_breach_id(text):
        raise BreachIdError(f"breach id {shown(text)} is invalid: it must be {BREACH_ID_RULE}")
    return text


def shown(text: str) -> str:
    """A breach id (valid or not) as it may appear in a message: escaped, at most 64 chars."""
    return repr(text[:64]) + ("…" if len(text) > 64 else "")


def path_in(folder: Path, breach_id: str, suffix: str = "") -> Path:
    """``folder / (breach_id + suffix)``, refused unless it resolves to a direct child of folder."""
    check_breach_id(breach_id)
    path = folder / f"{breach_id}{suffix}"
    if path.resolve().parent != folder.resolve():
        raise BreachIdError(f"the path for breach {shown(breach_id)} leaves {folder}; refused")
    return path
