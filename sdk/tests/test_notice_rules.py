"""The notice text rules ingest applies before publishing and the notifier when rendering."""

from __future__ import annotations

import pytest

from breachmatch.notice_rules import (
    MAX_ORGANISATION,
    NoticeTextError,
    check_breach_text,
    text_problem,
)

BOTH = {"da": "Journaler blev kopieret.", "en": "Records were copied."}


def test_a_breach_with_title_organisation_and_both_descriptions_passes():
    check_breach_text("Alles Lægehus-lækket", "Alles Lægehus ApS", BOTH)
    check_breach_text("Alles Lægehus-lækket", "Alles Lægehus ApS", {})  # no description at all


@pytest.mark.parametrize(
    ("title", "organisation", "descriptions", "field", "problem"),
    [
        ("T", "", BOTH, "organisation", "empty"),
        ("", "O", BOTH, "title", "empty"),
        ("T", "O" * (MAX_ORGANISATION + 1), BOTH, "organisation", "longer than"),
        ("T", "O", {"da": "Kun dansk."}, "description.en", "missing"),
        ("T", "O", {**BOTH, "de": "Deutsch."}, "description.de", "notices are written in"),
        ("T", "O", {**BOTH, "en": "See https://example.com"}, "description.en", "link"),
        ("Klik her", "O", BOTH, "title", "asks the reader"),
        ("T", "Reply to us", BOTH, "organisation", "asks the reader"),
        ("Two\nlines", "O", BOTH, "title", "one printable line"),
        ("T", "O", {**BOTH, "da": "Tekst\x07"}, "description.da", "control characters"),
    ],
)
def test_what_a_notice_could_not_carry_is_named_by_field(
    title: str, organisation: str, descriptions: dict[str, str], field: str, problem: str
):
    with pytest.raises(NoticeTextError) as refused:
        check_breach_text(title, organisation, descriptions)
    assert refused.value.field == field
    assert problem in refused.value.problem
    assert "example.com" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Ring på 70 20 30 40", None),
        ("www.svindel.dk", "link"),
        ("mailto:x@y.dk", "link"),
        ("Bekræft dit CPR-nummer", "asks"),
        ("Please verify your account", "asks"),
    ],
)
def test_text_problem(text: str, problem: str | None):
    found = text_problem(text)
    assert (found is None) if problem is None else (found is not None and problem in found)
