"""Notices: content per language and category, no links, and startup validation."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels import Dispatcher, SmsChannel, SmsGatewayConfig
from breachmatch_notifier.notice import (
    PACKAGED_TEMPLATES,
    BreachInfo,
    NoticeContext,
    NoticeError,
    NoticeRenderer,
    Sender,
    TemplateValidationError,
    check_recipient_name,
    render_notice,
    select_language,
    sms_segments,
    validate_templates,
)

from .conftest import RecordingIntent

LINK = re.compile(r"https?:|www\.|://", re.IGNORECASE)

BREACH = BreachInfo(
    breach_id="alles-2025",
    title="Alles Lægehus-lækket",
    organisation="Alles Lægehus",
    breach_date=date(2025, 3, 1),
    added_date=date(2025, 3, 20),
    descriptions={
        "da": "Journaldata blev lagt frem på et kriminelt forum.",
        "en": "Medical records were posted on a criminal forum.",
    },
)
SENDER = Sender(
    organisation="Rigshospitalet",
    contact_point="Patientkontoret, tlf. 35 45 35 45, hverdage 9-15",
)
NAME = "Ole Ølgaard"


def context(
    language: str, categories: tuple[str, ...] = ("contact", "national_id")
) -> NoticeContext:
    return NoticeContext(
        breach=BREACH,
        sender=SENDER,
        categories=categories,
        recipient_name=NAME,
        language=language,
    )


def test_packaged_templates_validate_in_danish_and_english() -> None:
    renderer = validate_templates()
    assert set(renderer.languages) == {"da", "en"}


def test_danish_notice_names_the_danish_categories_and_dates() -> None:
    notice = render_notice(context("da-DK", ("national_id", "medication")))
    assert notice.language == "da"
    for part in (notice.text, notice.html, notice.digital_post_text):
        assert "CPR-nummer" in part
        assert "oplysninger om medicin" in part
        assert "diagnoser" not in part  # not exposed, not mentioned
        assert "1. marts 2025" in part
        assert "20. marts 2025" in part
        assert "Alles Lægehus" in part
        assert "Patientkontoret, tlf. 35 45 35 45" in part
        assert "Vi vil aldrig bede dig om dit CPR-nummer" in part
        assert "information about medication" not in part
    assert notice.subject.startswith("Vigtig besked fra Rigshospitalet")


def test_english_notice_names_the_english_categories_and_dates() -> None:
    notice = render_notice(context("en-GB", ("diagnoses", "referrals")))
    assert notice.language == "en"
    for part in (notice.text, notice.html, notice.digital_post_text):
        assert "diagnoses" in part
        assert "referrals" in part
        assert "information about medication" not in part
        assert "1 March 2025" in part
        assert "20 March 2025" in part
        assert "We will never ask you for your CPR or social security number" in part
        assert "henvisninger" not in part
    assert "Your information was part of a data breach at Alles Lægehus" in notice.sms_text


@pytest.mark.parametrize("language", ["da", "en"])
def test_no_part_of_a_notice_carries_a_link(language: str) -> None:
    notice = render_notice(context(language, ("contact", "free_text", "medical_history")))
    parts = [
        notice.subject,
        notice.text,
        notice.html,
        notice.sms_text,
        notice.digital_post_text,
    ]
    for part in parts:
        assert part.strip()
        assert LINK.search(part) is None


@pytest.mark.parametrize("language", ["da", "en"])
def test_sms_is_short_and_points_to_the_contact(language: str) -> None:
    notice = render_notice(context(language))
    assert sms_segments(notice.sms_text) <= 2
    assert "Patientkontoret, tlf. 35 45 35 45, hverdage 9-15" in notice.sms_text
    assert NAME not in notice.sms_text  # the SMS names nobody


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("da", "da"), ("da-DK", "da"), ("EN", "en"), ("en_US", "en"), ("fr-FR", "da"), ("", "da")],
)
def test_language_follows_the_bcp47_prefix_with_fallback(tag: str, expected: str) -> None:
    assert select_language(tag, ("da", "en"), "da") == expected
    assert render_notice(context(tag)).language == expected


def test_fallback_language_is_configurable() -> None:
    renderer = NoticeRenderer(fallback_language="en")
    assert renderer.render(context("fr")).language == "en"


def test_missing_fallback_language_is_refused() -> None:
    with pytest.raises(TemplateValidationError, match=r"phrases\.de\.toml"):
        NoticeRenderer(fallback_language="de")


def test_html_escapes_values_and_text_keeps_them() -> None:
    name = "Anna <b>Ærø</b> & Co"
    notice = render_notice(
        NoticeContext(breach=BREACH, sender=SENDER, recipient_name=name, language="da")
    )
    assert "Anna &lt;b&gt;Ærø&lt;/b&gt; &amp; Co" in notice.html
    assert name not in notice.html
    assert name in notice.text


def test_unknown_breach_date_and_categories_are_said_plainly() -> None:
    notice = render_notice(
        NoticeContext(
            breach=BreachInfo("b", "Titel", "Leverandør A/S", None, date(2025, 1, 2)),
            sender=SENDER,
            language="da",
        )
    )
    assert "på et tidspunkt, som endnu ikke er kendt" in notice.text
    assert "Det er endnu ikke opgjort præcist" in notice.text
    assert "2. januar 2025" in notice.text


def test_context_from_contact_details() -> None:
    contact = ContactDetails(name=NAME, language="en")
    notice = render_notice(NoticeContext.for_contact(BREACH, SENDER, contact, ("MEDICATION",)))
    assert notice.language == "en"
    assert f"Dear {NAME}," in notice.text
    assert "information about medication" in notice.text


def test_unknown_category_is_refused_without_echoing_it() -> None:
    cpr_by_mistake = "0101901234"
    with pytest.raises(NoticeError) as caught:
        render_notice(context("da", ("contact", cpr_by_mistake)))
    assert "categories" in str(caught.value)
    assert cpr_by_mistake not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "breach", "sender"),
    [
        (
            "breach.description.da",
            BreachInfo("b", "T", "O", None, date(2025, 1, 1), {"da": "Se https://evil.example"}),
            SENDER,
        ),
        ("sender.contact_point", BREACH, Sender("Rigshospitalet", "www.rigshospitalet.dk")),
        ("breach.title", BreachInfo("b", "Klik her", "O", None, date(2025, 1, 1)), SENDER),
        ("sender.contact_point", BREACH, Sender("Rigshospitalet", " ")),
    ],
)
def test_values_that_would_add_a_link_or_a_request_are_refused(
    field: str, breach: BreachInfo, sender: Sender
) -> None:
    with pytest.raises(NoticeError, match=re.escape(field)) as caught:
        render_notice(NoticeContext(breach=breach, sender=sender, language="da"))
    assert "evil" not in str(caught.value)
    assert "rigshospitalet.dk" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("Anna " * 30, "longer than 100"),
        ("Anna\nRing 70 20 30 40", "one line"),
        ("Anna\u2028Hansen", "one line"),
        ("Anna Hansen ring 70203040", "digits"),
        ("Anna, give your card number", "asks the reader"),
        ("Anna, giv os dit kortnummer", "asks the reader"),
        ("Anna, klik her", "asks the reader"),
        ("Anna www.bank-login.example", "link"),
    ],
)
def test_a_recipient_name_carrying_a_scam_text_is_refused(name: str, rule: str) -> None:
    with pytest.raises(NoticeError, match="recipient_name") as caught:
        check_recipient_name(name)
    assert rule in str(caught.value)
    assert "Anna" not in str(caught.value)
    with pytest.raises(NoticeError, match="recipient_name"):
        render_notice(NoticeContext(BREACH, SENDER, recipient_name=name, language="da"))


@pytest.mark.parametrize("name", ["", "Birgitte Ærø-Sørensen", "Jean-Luc O'Neill", "Zoë Åberg"])
def test_real_names_pass(name: str) -> None:
    check_recipient_name(name)
    assert render_notice(NoticeContext(BREACH, SENDER, recipient_name=name, language="da")).text


def test_notice_and_context_reprs_hold_no_recipient_data() -> None:
    ctx = context("da")
    notice = render_notice(ctx)
    assert NAME not in repr(notice)
    assert NAME not in repr(ctx)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("æøå" * 102, 2),  # Danish letters are GSM-7: 306 septets
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters cost two septets
        ("€" * 81, 2),
        ("–" + "a" * 69, 1),  # an en dash forces UCS-2
        ("–" + "a" * 70, 2),
        ("–" + "a" * 134, 3),
    ],
)
def test_sms_segment_count(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


# --- startup validation of a template directory -------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(PACKAGED_TEMPLATES, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, "the test's edit must change the template"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_copied_templates_validate(templates: Path) -> None:
    assert validate_templates(templates).languages == ("da", "en")


@pytest.mark.parametrize(
    ("file", "old", "new", "template", "problem"),
    [
        ("_body.da.txt", "{{ t.never_ask }}", "", "email.da.txt", "never-ask"),
        (
            "_body.en.txt",
            ": {{ sender.contact_point }}",
            "",
            "email.en.txt",
            "lacks contact point",
        ),
        (
            "digital_post.da.txt",
            '{% include "_body.da.txt" %}',
            "Noget skete.",
            "digital_post.da.txt",
            "lacks",
        ),
        ("email.da.html", "{{ t.measures }}", "", "email.da.html", "organisation is doing"),
        ("email.en.html", "{{ t.advice }}", "", "email.en.html", "person should do"),
        (
            "email.en.html",
            "{{ sender.organisation }}</p>",
            "{{ sender.organisation|safe }}</p>",
            "email.en.html",
            "escape",
        ),
        ("sms.da.txt", "{{ t.sms_details }}", "Læs mere på www.example.dk", "sms.da.txt", "link"),
        (
            "subject.en.txt",
            "Important",
            "Reply with your CPR number: important",
            "subject.en.txt",
            "asks",
        ),
        ("sms.en.txt", "{{ t.sms_never_ask }}", "", "sms.en.txt", "never-ask"),
        (
            "sms.en.txt",
            "{{ t.sms_never_ask }}",
            "{{ t.sms_never_ask }}" * 6,
            "sms.en.txt",
            "segments",
        ),
        ("email.en.txt", "{% include", "{{ no_such_value }}{% include", "email.en.txt", "rendered"),
        (
            "phrases.da.toml",
            "[categories.diagnoses]",
            "[categories.diagnosis]",
            "phrases.da.toml",
            "categories.diagnoses",
        ),
        ("phrases.en.toml", "advice =", "tips =", "phrases.en.toml", "advice"),
    ],
)
def test_broken_template_is_refused(
    templates: Path, file: str, old: str, new: str, template: str, problem: str
) -> None:
    edit(templates / file, old, new)
    with pytest.raises(TemplateValidationError) as caught:
        validate_templates(templates)
    assert caught.value.template == template
    assert problem in caught.value.problem


def test_missing_template_file_is_refused(templates: Path) -> None:
    (templates / "digital_post.en.txt").unlink()
    with pytest.raises(TemplateValidationError) as caught:
        validate_templates(templates)
    assert caught.value.template == "digital_post.en.txt"


def test_a_new_language_needs_every_template(templates: Path) -> None:
    shutil.copy(templates / "phrases.en.toml", templates / "phrases.de.toml")
    with pytest.raises(TemplateValidationError) as caught:
        validate_templates(templates)
    assert caught.value.template.endswith(".de.txt")


#: A contact point long enough that no SMS can carry it within the segment limit.
WORDY = Sender("Rigshospitalet", "Patientkontoret, hverdage fra morgen til aften, " * 8)


def test_only_the_parts_a_channel_reads_are_rendered_and_checked() -> None:
    notice = render_notice(NoticeContext(BREACH, WORDY, recipient_name=NAME, language="da"))
    assert WORDY.contact_point.strip() in notice.text  # the e-mail parts render and fit
    assert NAME in notice.html
    with pytest.raises(NoticeError, match=r"sms_text: \d+ segments, the limit is 2"):
        notice.prepare(("sms_text",))
    assert NAME not in repr(notice)


async def test_an_overlong_sms_is_refused_before_the_channel_is_tried() -> None:
    sms = SmsChannel(SmsGatewayConfig(url="http://127.0.0.1:9/never-contacted"))
    intent = RecordingIntent()
    notice = render_notice(NoticeContext(BREACH, WORDY, language="da"))
    try:
        with pytest.raises(NoticeError, match="sms_text"):
            await Dispatcher({"sms": sms}).deliver(
                notice, ContactDetails(phone="+4520304050"), "key-1", intent
            )
    finally:
        await sms.aclose()
    assert intent.events == []
