"""What text may go into a patient notice: the rules ingest and the notifier share.

The notifier renders every notice from the breach's signed manifest; if a
manifest field breaks a notice rule, every notice of that breach is refused
at delivery time, long after the operator published it and went home. So
ingest checks the breach's texts with these very rules *before* it publishes,
and the notifier checks every value it renders with them too: one module, so
the two can never disagree about what is sendable.

The rules, and why:

* no links, and nothing that asks the reader to act on a channel or hand
  something over: after the Alles Lægehus leak, fraudsters used the leaked
  details to sound credible, and a genuine notice must never look like their
  messages (`text_problem`);
* the breach is described in every notice language (`NOTICE_LANGUAGES`), or
  in none: a Danish notice quotes the Danish text, never the English one;
* one-line fields are bounded (`MAX_TITLE`, `MAX_ORGANISATION`), so a notice
  with the longest breach organisation still fits the SMS budget — the
  notifier's template validation renders its probes with exactly that length.

Messages name the field and the rule, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: The languages every notice template set offers and every breach is described in.
NOTICE_LANGUAGES = ("da", "en")
MAX_TITLE = 120
MAX_ORGANISATION = 60
MAX_DESCRIPTION = 2000

LINK = re.compile(r"https?:|www\.|://|mailto:", re.IGNORECASE)
#: Phrases that ask the reader to act on a channel or hand something over: the
#: shape of the fraud messages a genuine notice must never resemble.
REQUEST = re.compile(
    "|".join(
        (
            r"\breply\b",
            r"\brespond (?:to|with)\b",
            r"\b(?:confirm|verify|enter|provide|update) your\b",
            r"\bclick",
            r"\b(?:log|sign) ?in\b",
            r"\bsend us\b",
            r"\bgive (?:us |me )?your\b",
            r"\b(?:card|account) ?number",
            r"\bpin ?code",
            r"\bcv[cv]\b",
            r"\bsvar (?:på|med|os)\b",
            r"\bbekræft",
            r"\bklik",
            r"\blog (?:ind|på)\b",
            r"\bsend os\b",
            r"\bindtast",
            r"\b(?:oplys|opdater) (?:dit|din|dine)\b",
            r"\bgiv (?:os |mig )?(?:dit|din|dine)\b",
            r"\b(?:kort|konto)nummer",
            r"\bpinkode",
        )
    ),
    re.IGNORECASE,
)


class NoticeTextError(ValueError):
    """A text that cannot go into a notice; `field` names it, `problem` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def text_problem(value: str) -> str | None:
    """Why `value` cannot appear in a notice (a link, a request), or None."""
    if LINK.search(value):
        return "contains a link; notices carry none"
    if REQUEST.search(value):
        return "asks the reader for something; notices ask for nothing"
    return None


def check_line(field: str, value: str, *, limit: int, required: bool) -> None:
    """One printable line of at most `limit` characters that passes `text_problem`."""
    if required and not value.strip():
        raise NoticeTextError(field, "empty; every notice names it")
    if len(value) > limit:
        raise NoticeTextError(field, f"longer than {limit} characters")
    if not value.isprintable():
        raise NoticeTextError(field, "must be one printable line")
    problem = text_problem(value)
    if problem:
        raise NoticeTextError(field, problem)


def check_breach_text(title: str, organisation: str, descriptions: Mapping[str, str]) -> None:
    """Raise `NoticeTextError` unless a notice about this breach renders in every language.

    Field names are ``title``, ``organisation`` and ``description.<language>``.
    """
    check_line("title", title, limit=MAX_TITLE, required=True)
    check_line("organisation", organisation, limit=MAX_ORGANISATION, required=True)
    unknown = sorted(set(descriptions) - set(NOTICE_LANGUAGES))
    if unknown:
        raise NoticeTextError(
            f"description.{unknown[0]}", f"notices are written in {', '.join(NOTICE_LANGUAGES)}"
        )
    if descriptions:
        for language in NOTICE_LANGUAGES:
            check_description(f"description.{language}", descriptions.get(language, ""))


def check_description(field: str, value: str) -> None:
    """A description: some text, bounded, no link, no request (it may span lines)."""
    if not value.strip():
        raise NoticeTextError(
            field,
            f"missing; a breach is described in every notice language or in none "
            f"({', '.join(NOTICE_LANGUAGES)})",
        )
    if len(value) > MAX_DESCRIPTION:
        raise NoticeTextError(field, f"longer than {MAX_DESCRIPTION} characters")
    if not all(ch.isprintable() or ch == "\n" for ch in value):
        raise NoticeTextError(field, "holds control characters")
    problem = text_problem(value)
    if problem:
        raise NoticeTextError(field, problem)
