"""Patient notices: what one person is told about one breach, in every form.

The law fixes what a breach notice must say (GDPR Art. 34, HIPAA §164.404):
what happened and when, which data, the likely consequences, what the
organisation is doing, what the person should do, and where to turn. The
wording of each element lives in ``templates/phrases.<language>.toml``; the
Jinja templates only arrange it. ``validate_templates()`` renders every
template with probe values and refuses any that drops an element, shows a link
or asks the reader for anything, so a template edit cannot quietly produce an
unlawful or phishing-shaped notice: the service calls it at startup and does
not start when it raises.

Notices carry no links and ask for nothing because, after the Alles Lægehus
leak, fraudsters used the leaked details to sound credible; a genuine notice
must not look like their messages, and says so explicitly. The rules for what
text may go into a notice live in `breachmatch.notice_rules`, which ingest
applies to a breach before publishing it: what ingest lets through, this
module renders. The probes render the longest breach title and organisation
ingest allows, so a template set that validates fits every published breach.
A notice quotes the breach's description in its own language only.

The recipient's name is the one value a hospital writes into a notice, so it
is held to more than the others (`check_recipient_name`): besides the link and
request rules every field passes, it is capped at `MAX_NAME_LENGTH`
characters, one printable line, and holds no digits — a name has none, while
a phone number, an amount or a card number in a greeting is exactly how a
scam text would ride inside a genuine notice.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape

from breachmatch.notice_rules import LINK, MAX_ORGANISATION, MAX_TITLE, REQUEST, text_problem
from breachmatch.records import Category
from breachmatch.v1.outreach_pb2 import ContactDetails

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_LANGUAGE = "da"
SMS_MAX_SEGMENTS = 2
#: Longest recipient name a notice greets (characters); real names are far shorter.
MAX_NAME_LENGTH = 100

#: Each part of a notice and the template it is rendered from.
TEMPLATE_FILES: Mapping[str, str] = {
    "subject": "subject.{language}.txt",
    "text": "email.{language}.txt",
    "html": "email.{language}.html",
    "sms_text": "sms.{language}.txt",
    "digital_post_text": "digital_post.{language}.txt",
}
#: A language is offered when its phrases file exists; its templates must too.
PHRASES_FILE = "phrases.{language}.toml"

_LETTER_PARTS = ("text", "html", "digital_post_text")
_SINGLE_LINE_PARTS = ("subject", "sms_text")

# GSM 03.38: the basic set costs one septet per character, the extension two;
# anything else forces UCS-2, which shrinks a segment from 160 to 70 characters.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
_GSM7 = _GSM7_BASIC | _GSM7_EXTENSION


class NoticeError(ValueError):
    """A notice cannot be made from this context.

    Messages name the field and the reason, never a value: the context carries
    the recipient's name and this error may reach a log line.
    """


class TemplateValidationError(NoticeError):
    """A template set lacks something every notice must carry; do not start."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(f"{template}: {problem}")
        self.template = template
        self.problem = problem


@dataclass(frozen=True, slots=True)
class BreachInfo:
    """The breach as published in its signed manifest."""

    breach_id: str
    title: str
    organisation: str
    breach_date: date | None
    added_date: date
    #: The description per notice language; a notice quotes only its own language's.
    descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sender:
    """The tenant (hospital, clinic) a notice comes from, and where to turn.

    ``contact_point`` is the hospital's own wording, e.g. "Patientkontoret,
    tlf. 70 20 30 40, hverdage 9-15"; it must hold no link.
    """

    organisation: str
    contact_point: str


@dataclass(frozen=True, slots=True)
class NoticeContext:
    """Everything one notice is rendered from."""

    breach: BreachInfo
    sender: Sender
    #: `breachmatch.records.Category` names (any case), from the match's label.
    categories: tuple[str, ...] = ()
    recipient_name: str = field(default="", repr=False)
    #: BCP 47 tag; unknown or empty falls back to the renderer's fallback.
    language: str = ""

    @classmethod
    def for_contact(
        cls,
        breach: BreachInfo,
        sender: Sender,
        contact: ContactDetails,
        categories: tuple[str, ...],
    ) -> NoticeContext:
        """The context for the person a sealed `ContactDetails` describes.

        ``categories`` are the proven entry's (`proofs.ProvenMatch`), never the hospital's word.
        """
        return cls(
            breach=breach,
            sender=sender,
            categories=categories,
            recipient_name=contact.name,
            language=contact.language,
        )


class Notice:
    """One notice; channels pick the parts they send, and only those are rendered.

    A notice from `NoticeRenderer.render` renders a part the first time it is
    read and keeps it: an e-mail never pays for the SMS and letter templates
    (five Jinja renders were a fifth of the notifier's CPU per notice). The
    dispatcher calls `prepare` with the channel's parts before trying it, so
    a part that cannot be sent (an SMS over `SMS_MAX_SEGMENTS`) is refused as
    `NoticeError` before any intent is recorded. A notice built with all its
    parts given (operator alerts, tests) renders nothing.

    The parts are left out of ``repr`` because they hold the recipient's
    name, and a notice may end up in a log or a traceback.
    """

    __slots__ = ("_parts", "_render", "language", "sender")

    def __init__(
        self,
        language: str,
        sender: str,
        *,
        render: Callable[[str], str] | None = None,
        **parts: str,
    ) -> None:
        unknown = set(parts) - set(TEMPLATE_FILES)
        if unknown:
            raise TypeError(f"Notice: unknown parts {sorted(unknown)}")
        if render is None and len(parts) != len(TEMPLATE_FILES):
            raise TypeError("Notice: every part is needed when there is nothing to render them")
        self.language = language
        #: The tenant's organisation name, for an e-mail display name or a letter head.
        self.sender = sender
        self._parts = parts
        self._render = render

    def __repr__(self) -> str:
        return f"Notice(language={self.language!r}, sender={self.sender!r})"

    def part(self, name: str) -> str:
        """One part (a `TEMPLATE_FILES` key), rendered on first use; raises `NoticeError`."""
        rendered = self._parts.get(name)
        if rendered is None:
            if self._render is None or name not in TEMPLATE_FILES:
                raise NoticeError(f"{name}: not a part of a notice")
            rendered = self._parts[name] = self._render(name)
        return rendered

    def prepare(self, parts: Iterable[str]) -> None:
        """Render (and check) these parts now, before a channel commits to sending them."""
        for name in parts:
            self.part(name)

    @property
    def subject(self) -> str:
        return self.part("subject")

    @property
    def text(self) -> str:
        return self.part("text")

    @property
    def html(self) -> str:
        return self.part("html")

    @property
    def sms_text(self) -> str:
        return self.part("sms_text")

    @property
    def digital_post_text(self) -> str:
        return self.part("digital_post_text")


@dataclass(frozen=True, slots=True)
class CategoryWording:
    """How one data category is named, and what its exposure may lead to."""

    label: str
    risk: str


@dataclass(frozen=True, slots=True)
class Phrases:
    """The wording of one language (``phrases.<language>.toml``)."""

    months: tuple[str, ...]
    date_pattern: str
    date_unknown: str
    categories_unknown: str
    consequences: str
    measures: str
    advice: str
    never_ask: str
    sms_details: str
    sms_never_ask: str
    categories: Mapping[str, CategoryWording]

    def format_date(self, day: date) -> str:
        return self.date_pattern.format(
            day=day.day, month=self.months[day.month - 1], year=day.year
        )


def select_language(tag: str, available: Iterable[str], fallback: str) -> str:
    """The language to write in for a BCP 47 tag: "da-DK" → "da"; unknown → fallback."""
    primary = re.split(r"[-_]", tag.strip(), maxsplit=1)[0].lower()
    return primary if primary in set(available) else fallback


def sms_segments(text: str) -> int:
    """How many SMS segments the text costs (GSM-7 when it fits, else UCS-2)."""
    # By distinct characters: a per-character loop cost more than the rest of a render.
    distinct = set(text)
    if distinct <= _GSM7:
        units = len(text) + sum(text.count(ch) for ch in distinct & _GSM7_EXTENSION)
        single, concatenated = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, concatenated = 70, 67
    return 1 if units <= single else math.ceil(units / concatenated)


class NoticeRenderer:
    """Renders notices from one template directory (the packaged one by default)."""

    def __init__(
        self, template_dir: Path | None = None, *, fallback_language: str = DEFAULT_LANGUAGE
    ) -> None:
        self.template_dir = template_dir or PACKAGED_TEMPLATES
        self.fallback_language = fallback_language
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.template_dir),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # The templates are validated once, at start-up: a file edited later must
            # not be picked up unchecked (and not stat()ed for it on every notice).
            auto_reload=False,
        )
        self._phrases = {
            path.name.split(".")[1]: _load_phrases(path)
            for path in sorted(self.template_dir.glob(PHRASES_FILE.format(language="*")))
        }
        if fallback_language not in self._phrases:
            raise TemplateValidationError(
                PHRASES_FILE.format(language=fallback_language),
                "missing: the fallback language needs phrases and templates",
            )

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._phrases)

    def render(self, context: NoticeContext) -> Notice:
        """The notice in the recipient's language; its parts render when a channel reads them.

        The context is checked here, whatever channel sends the notice; the
        SMS segment limit is checked when the SMS text is rendered.
        """
        _check_context(context)
        language = select_language(context.language, self._phrases, self.fallback_language)
        variables = self._variables(context, language)

        def render_part(part: str) -> str:
            rendered = self._render_part(part, language, variables)
            if part == "sms_text" and (segments := sms_segments(rendered)) > SMS_MAX_SEGMENTS:
                raise NoticeError(f"sms_text: {segments} segments, the limit is {SMS_MAX_SEGMENTS}")
            return rendered

        return Notice(language, context.sender.organisation, render=render_part)

    def validate(self) -> None:
        """Render every template with probe values; raise on the first shortfall."""
        for language, phrases in self._phrases.items():
            for probe in _PROBES:
                variables = self._variables(probe, language)
                for part, filename in TEMPLATE_FILES.items():
                    rendered = self._render_part(part, language, variables)
                    template = filename.format(language=language)
                    _check_rendered(template, part, rendered, probe, language, phrases)

    def _render_part(self, part: str, language: str, variables: Mapping[str, Any]) -> str:
        name = TEMPLATE_FILES[part].format(language=language)
        try:
            rendered = self._env.get_template(name).render(variables)
        except jinja2.TemplateError as exc:
            raise TemplateValidationError(
                name, f"cannot be rendered ({type(exc).__name__}: {exc.message})"
            ) from exc
        if part in _SINGLE_LINE_PARTS:
            return " ".join(rendered.split())
        return rendered.strip() + "\n"

    def _variables(self, context: NoticeContext, language: str) -> dict[str, Any]:
        phrases = self._phrases[language]
        exposed = [phrases.categories[name] for name in _categories(context.categories).names()]
        breach_date = context.breach.breach_date
        return {
            "language": language,
            "recipient_name": context.recipient_name.strip(),
            "breach": context.breach,
            "description": context.breach.descriptions.get(language, ""),
            "breach_date": phrases.format_date(breach_date) if breach_date else "",
            "added_date": phrases.format_date(context.breach.added_date),
            "categories": exposed,
            "risks": list(dict.fromkeys(wording.risk for wording in exposed)),
            "sender": context.sender,
            "t": phrases,
        }


def validate_templates(
    template_dir: Path | None = None, *, fallback_language: str = DEFAULT_LANGUAGE
) -> NoticeRenderer:
    """Load and check a template set; the service refuses to start if this raises.

    Raises `TemplateValidationError` naming the template and what it lacks.
    """
    renderer = NoticeRenderer(template_dir, fallback_language=fallback_language)
    renderer.validate()
    return renderer


@functools.cache
def default_renderer() -> NoticeRenderer:
    """The packaged templates, validated once per process."""
    return validate_templates()


def render_notice(context: NoticeContext) -> Notice:
    """Render a notice with the packaged templates."""
    return default_renderer().render(context)


def _categories(names: Iterable[str]) -> Category:
    try:
        return Category.from_names(tuple(names))
    except KeyError:
        raise NoticeError("categories: unknown category name") from None


def check_recipient_name(name: str) -> None:
    """Refuse a name that is not one short printable line without digits, links or requests.

    Raises `NoticeError` naming the rule (never the name). An empty name is
    allowed: the notice then greets "patient".
    """
    if len(name) > MAX_NAME_LENGTH:
        raise NoticeError(f"recipient_name: longer than {MAX_NAME_LENGTH} characters")
    if not name.isprintable():
        raise NoticeError("recipient_name: must be one line of printable characters")
    if any(ch.isdigit() for ch in name):
        raise NoticeError("recipient_name: holds digits; a name has none")
    _check_field("recipient_name", name)


def _check_field(name: str, value: str) -> None:
    problem = text_problem(value)
    if problem:
        raise NoticeError(f"{name}: {problem}")


def _check_context(context: NoticeContext) -> None:
    """Refuse values that would put a link or a request into a notice."""
    values = {
        "breach.title": context.breach.title,
        "breach.organisation": context.breach.organisation,
        **{
            f"breach.description.{language}": text
            for language, text in context.breach.descriptions.items()
        },
        "sender.organisation": context.sender.organisation,
        "sender.contact_point": context.sender.contact_point,
    }
    for name, value in values.items():
        _check_field(name, value)
    check_recipient_name(context.recipient_name)
    for name in ("breach.title", "breach.organisation", "sender.organisation"):
        if not values[name].strip():
            raise NoticeError(f"{name}: empty")
    if not values["sender.contact_point"].strip():
        raise NoticeError("sender.contact_point: empty; every notice needs a contact point")


def _load_phrases(path: Path) -> Phrases:
    name = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateValidationError(name, f"cannot be read ({type(exc).__name__})") from exc

    def phrase(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise TemplateValidationError(name, f"missing phrase {key!r}")
        return value.strip()

    months = data.get("months")
    if not (
        isinstance(months, list)
        and len(months) == 12
        and all(isinstance(month, str) and month for month in months)
    ):
        raise TemplateValidationError(name, "'months' must list the twelve month names")
    date_pattern = phrase("date_pattern")
    try:
        date_pattern.format(day=1, month=months[0], year=2000)
    except (KeyError, IndexError, ValueError):
        raise TemplateValidationError(
            name, "'date_pattern' may use only {day}, {month} and {year}"
        ) from None
    table = data.get("categories")
    if not isinstance(table, dict):
        raise TemplateValidationError(name, "missing table 'categories'")
    wording = {}
    for category in Category.legend():
        entry = table.get(category)
        label = entry.get("label") if isinstance(entry, dict) else None
        risk = entry.get("risk") if isinstance(entry, dict) else None
        if not (
            isinstance(label, str) and label.strip() and isinstance(risk, str) and risk.strip()
        ):
            raise TemplateValidationError(name, f"categories.{category} needs a label and a risk")
        wording[category] = CategoryWording(label=label.strip(), risk=risk.strip())
    return Phrases(
        months=tuple(months),
        date_pattern=date_pattern,
        date_unknown=phrase("date_unknown"),
        categories_unknown=phrase("categories_unknown"),
        consequences=phrase("consequences"),
        measures=phrase("measures"),
        advice=phrase("advice"),
        never_ask=phrase("never_ask"),
        sms_details=phrase("sms_details"),
        sms_never_ask=phrase("sms_never_ask"),
        categories=wording,
    )


# Probe values: the sender holds "&" and "<" so that validation also proves the
# HTML is escaped, and lengths are realistic so the SMS budget is tested.
_PROBE_SENDER = Sender(
    organisation="Probe Hospital & <Clinic> of Region Syd",
    contact_point="Probe patient office, phone 00 00 00 00, weekdays 8-15",
)
# The breach's one-line texts are as long as ingest allows (`notice_rules`).
_PROBE_BREACH = BreachInfo(
    breach_id="probe",
    title="Probe breach title ".ljust(MAX_TITLE, "t"),
    organisation="Probe Breach Organisation ApS ".ljust(MAX_ORGANISATION, "o"),
    breach_date=date(2031, 2, 3),
    added_date=date(2031, 4, 5),
    descriptions={
        "da": "Probe-beskrivelse af hvad der skete.",
        "en": "Probe description of what happened.",
    },
)
_PROBES = (
    NoticeContext(
        breach=_PROBE_BREACH,
        sender=_PROBE_SENDER,
        categories=tuple(Category.legend()),
        recipient_name="Probe Recipient",
    ),
    NoticeContext(
        breach=replace(_PROBE_BREACH, breach_date=None, descriptions={}),
        sender=_PROBE_SENDER,
    ),
)


def _letter_requirements(
    probe: NoticeContext, language: str, phrases: Phrases
) -> list[tuple[str, str]]:
    """(element, text that proves it) for a full notice: e-mail or letter."""
    breach = probe.breach
    required = [
        ("what happened: breach title", breach.title),
        ("what happened: breached organisation", breach.organisation),
        ("when: date discovered", phrases.format_date(breach.added_date)),
        ("likely consequences", phrases.consequences),
        ("what the organisation is doing", phrases.measures),
        ("what the person should do", phrases.advice),
        ("the never-ask warning", phrases.never_ask),
        ("contact point: organisation", probe.sender.organisation),
        ("contact point", probe.sender.contact_point),
    ]
    if breach.breach_date:
        required.append(("when: breach date", phrases.format_date(breach.breach_date)))
    else:
        required.append(("when: breach date not yet known", phrases.date_unknown))
    description = breach.descriptions.get(language, "")
    if description:
        required.append(("what happened: description in the notice's language", description))
    for name in probe.categories:
        required.append((f"data category {name}", phrases.categories[name].label))
        required.append((f"consequence of data category {name}", phrases.categories[name].risk))
    if not probe.categories:
        required.append(("data categories not yet known", phrases.categories_unknown))
    return required


def _sms_requirements(probe: NoticeContext, phrases: Phrases) -> list[tuple[str, str]]:
    """(element, text that proves it) for the short SMS pointer to the full notice."""
    return [
        ("sender organisation", probe.sender.organisation),
        ("what happened: breached organisation", probe.breach.organisation),
        ("where the details are", phrases.sms_details),
        ("contact point", probe.sender.contact_point),
        ("the never-ask warning", phrases.sms_never_ask),
    ]


def _check_rendered(
    template: str, part: str, rendered: str, probe: NoticeContext, language: str, phrases: Phrases
) -> None:
    if not rendered.strip():
        raise TemplateValidationError(template, "renders empty")
    if LINK.search(rendered):
        raise TemplateValidationError(template, "contains a link; notices carry none")
    if REQUEST.search(rendered):
        raise TemplateValidationError(
            template, "asks the reader for something; notices ask for nothing"
        )
    if part == "html" and probe.sender.organisation in rendered:
        raise TemplateValidationError(template, "does not escape values (autoescape is off)")
    for other, text in probe.breach.descriptions.items():
        if other != language and text in rendered:
            raise TemplateValidationError(template, f"quotes the breach description in {other!r}")
    if part in _LETTER_PARTS:
        required = _letter_requirements(probe, language, phrases)
    elif part == "sms_text":
        required = _sms_requirements(probe, phrases)
        segments = sms_segments(rendered)
        if segments > SMS_MAX_SEGMENTS:
            raise TemplateValidationError(
                template, f"is {segments} SMS segments with probe values; the limit is 2"
            )
    else:
        required = []
    for element, text in required:
        expected = str(escape(text)) if part == "html" else text
        if expected not in rendered:
            raise TemplateValidationError(template, f"lacks {element}")
