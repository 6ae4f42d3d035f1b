"""One structlog configuration for every service and CLI, with redaction.

Logs are the easiest place for a patient identifier to leak: a debug line with
a row, an exception that quotes its input, a library warning. So redaction is
not left to call sites. Every event (structlog's and the standard library's,
routed through the same processors) passes `redact_identifiers`, which

* replaces the value of any key whose name says it holds an identifier or
  contact detail (``cpr``, ``email``, ``phone``, ``name``, ...), at any depth
  of nested dicts and lists, and
* scrubs every remaining string (the message too, and formatted tracebacks)
  for things shaped like identifiers: CPR numbers, US SSNs, e-mail addresses
  and phone numbers.

Output is JSON lines when stderr is not a terminal (what Kubernetes and the
CI collect) and a readable console rendering otherwise; timestamps are ISO
8601 in UTC; context bound with `structlog.contextvars` (tenant, request id)
appears on every line.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

#: Key names (lower-cased, without separators) whose values are never logged.
_SENSITIVE_KEYS = frozenset(
    {
        "cpr",
        "cprnr",
        "cprnumber",
        "personnummer",
        "ssn",
        "socialsecuritynumber",
        "mrn",
        "email",
        "emailaddress",
        "mail",
        "phone",
        "phonenumber",
        "mobile",
        "telefon",
        "mobil",
        "name",
        "fullname",
        "givenname",
        "familyname",
        "firstname",
        "lastname",
        "navn",
        "fornavn",
        "efternavn",
        "birthdate",
        "dob",
        "address",
        "postaladdress",
        "adresse",
        "identifier",
        "identifiers",
        "contact",
        "row",
        "record",
        "value",
        "raw",
    }
)

# Shapes of identifiers inside free text. Deliberately broad: a false positive
# costs a redacted number in a log line, a false negative costs a patient.
_PATTERNS = (
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # e-mail
    re.compile(r"(?<!\w)\d{6}[-\s.]?[\dA-Za-z]{4}(?!\w)"),  # CPR / e-CPR
    re.compile(r"(?<!\w)\d{3}[-\s]\d{2}[-\s]\d{4}(?!\w)"),  # US SSN
    re.compile(r"(?<![\w.])\+?\d[\d\s().-]{6,}\d(?![\w.])"),  # phone-like digit runs
)


def _normalise_key(key: object) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


# An IPv4 address (with an optional port) is what a log line about a connection
# must show, and it is digit-run shaped. It is kept when it cannot be a phone
# number written with dots: a port follows it, or not every group has exactly
# two digits ("10.0.0.12:4222" and "127.0.0.1" stay, "70.20.30.40" goes).
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(:\d{1,5})?(?![\w.])")
_KEPT = "\x00{}\x00"


def _is_address(match: re.Match[str]) -> bool:
    octets = match.groups()[:4]
    if any(int(octet) > 255 for octet in octets):
        return False
    return match.group(5) is not None or any(len(octet) != 2 for octet in octets)


def scrub_text(text: str) -> str:
    """Replace identifier-shaped substrings of `text` (network addresses excepted)."""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        if not _is_address(match):
            return match.group(0)
        kept.append(match.group(0))
        return _KEPT.format(len(kept) - 1)

    text = _IPV4.sub(keep, text)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    for index, address in enumerate(kept):
        text = text.replace(_KEPT.format(index), address, 1)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _normalise_key(k) in _SENSITIVE_KEYS else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return value


def redact_identifiers(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: see the module docstring."""
    for key, value in list(event_dict.items()):
        if _normalise_key(key) in _SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


LogFormat = Literal["auto", "json", "console"]


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        # Redact before the timestamp is added: an ISO date is digit-run shaped.
        redact_identifiers,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _not_tls_upgrade_noise(record: logging.LogRecord) -> bool:
    """False for asyncio's warning about a NATS connection closing after its TLS upgrade.

    nats-py connects in plaintext and upgrades to TLS after NATS's INFO line
    (`asyncio.start_tls`), so asyncio's stream protocol does not know it runs
    over TLS and, when the server goes away, answers EOF in a way the TLS layer
    ignores with a warning. The connection is closed either way; the warning
    says nothing an operator can act on, and during an outage it would add a
    line to the story `breachmatch.reachability` tells in a few lines.
    """
    return not (
        record.name == "asyncio"
        and str(record.msg).startswith("returning true from eof_received() has no effect")
    )


def configure_logging(
    service: str,
    level: str | int = "INFO",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library for one process.

    Safe to call more than once (tests and the demo do): it replaces the root
    handler instead of adding another.
    """
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(_not_tls_upgrade_noise)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def describe_unexpected(error: BaseException) -> str:
    """An unexpected error in one line: its type and where it was raised.

    Never its message: an exception from a parser or library may quote its
    input, and the input is patient data.
    """
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return f"unexpected {type(error).__name__}"
    last = frames[-1]
    where = f"{last.name} ({last.filename.rpartition('/')[2]}:{last.lineno})"
    return f"unexpected {type(error).__name__} at {where}"


def scrubbed_traceback(error: BaseException) -> str:
    """The full traceback (for ``--debug``), identifier-shaped text scrubbed."""
    return scrub_text("".join(traceback.format_exception(error)))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; typed `Any` because structlog's proxies are dynamic."""
    return structlog.get_logger(name)


def bind(**values: Any) -> Mapping[str, Any]:
    """Bind request-scoped context (tenant, request id) for this task/thread."""
    return structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
