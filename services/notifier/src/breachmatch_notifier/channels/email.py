"""E-mail over SMTP: a multipart (plain text + HTML) notice per patient.

The Message-ID and an ``X-Breachmatch-Idempotency-Key`` header are derived
from the idempotency key, so every attempt at the same notice carries the same
ids. An SMTP server does not drop a repeat by Message-ID, though, so this
channel does not deduplicate: once the server has accepted the recipient it
records the intent to send (``intent.commit``, with the Message-ID) and only
then issues DATA. A reply code to DATA (or to the end of the message) means
the server did not take it; a session that breaks off after DATA without an
answer is an unknown outcome (`DeliveryOutcomeUnknownError`), held for review
and never sent again on its own (`breachmatch_notifier.claims`).

Sessions are kept open between notices, so a notice costs a MAIL, RCPT and
DATA exchange rather than a new TCP connection, EHLO, STARTTLS and login. At
most ``sessions`` are open at once per process (``BREACHMATCH_SMTP_SESSIONS``):
the worker runs many deliveries concurrently, and a relay counts and limits
its clients' connections, so the rest wait their turn for a session rather
than open one each. A kept session the server has closed meanwhile is noticed
at MAIL — before anything is committed — and replaced once.

The message is written out directly rather than through the standard
library's MIME classes: their generator re-folds every header and compiles a
regular expression per boundary, several milliseconds of CPU per notice —
more than everything else a notice costs the notifier. Its shape is fixed
(multipart/alternative, plain text and HTML), the only headers that need
encoding are the subject and the sender — the same for every notice of one
hospital and breach, so encoded once by `email.header` and cached — and the
bodies are quoted-printable (7-bit, readable by any relay) through the C codec
in `binascii`; a boundary beginning with "=_" cannot occur in such a body.

MAIL and RCPT are issued as plain commands rather than through aiosmtplib's
``mail``/``rcpt``, which parse each address again with `email.utils` (about
5% of a notice's CPU): the sender's path is quoted once, and the recipient is
the bare address `normalise_email` made, which needs only its angle brackets.
"""

from __future__ import annotations

import asyncio
import binascii
import enum
import functools
import secrets
import ssl
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address

from breachmatch.identifiers import IdentifierError, normalise_email
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    EMAIL,
    Channel,
    DeliveryOutcomeUnknownError,
    DeliveryResult,
    PermanentDeliveryError,
    SendIntent,
    TransientDeliveryError,
    message_uuid,
)
from breachmatch_notifier.notice import Notice

IDEMPOTENCY_HEADER = "X-Breachmatch-Idempotency-Key"
#: Concurrent SMTP sessions per process unless configured (``BREACHMATCH_SMTP_SESSIONS``).
DEFAULT_SESSIONS = 16


class StartTls(enum.Enum):
    """Whether to upgrade the SMTP session with STARTTLS."""

    OFF = "off"
    #: Upgrade when the server offers it (aiosmtplib's default behaviour).
    OPPORTUNISTIC = "opportunistic"
    #: Fail (transiently) when the server cannot upgrade.
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    from_address: str
    port: int = 25
    starttls: StartTls = StartTls.OPPORTUNISTIC
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0
    #: Sessions open at once per process (and kept open between notices).
    sessions: int = DEFAULT_SESSIONS
    #: Trust anchors for the server certificate; None uses the system store.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)


class EmailChannel(Channel):
    parts = ("subject", "text", "html")

    def __init__(self, config: SmtpConfig, name: str = EMAIL) -> None:
        super().__init__(name)
        self._config = config
        self._from_domain = config.from_address.rpartition("@")[2] or "localhost"
        self._reverse_path = quote_address(config.from_address)
        self._idle: list[aiosmtplib.SMTP] = []
        self._sessions = asyncio.Semaphore(config.sessions)

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        recipient = _checked_address(self.name, contact.email)
        message_id = f"<{message_uuid(idempotency_key)}@{self._from_domain}>"
        utf8 = not (recipient + self._config.from_address).isascii()
        message = self._message(notice, recipient, message_id, idempotency_key, utf8=utf8)
        async with self._sessions:
            session = await self._envelope(recipient, utf8=utf8)
            try:
                await intent.commit(self.name, message_id)
            except BaseException:
                session.close()  # DATA never started: the server drops the transaction
                raise
            try:
                await session.data(message)
            except aiosmtplib.SMTPResponseException as exc:  # an answer: it did not take it
                session.close()
                raise _by_code(self.name, "message refused", exc.code) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                session.close()
                raise DeliveryOutcomeUnknownError(
                    self.name, f"SMTP session ended during DATA ({type(exc).__name__})"
                ) from None
            self._idle.append(session)  # at most ``sessions``: one per holder of the semaphore
        return DeliveryResult(
            channel=self.name, idempotency_key=idempotency_key, reference=message_id
        )

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            session.close()

    async def _envelope(self, recipient: str, *, utf8: bool) -> aiosmtplib.SMTP:
        """A session in which MAIL and RCPT were accepted (with SMTPUTF8 when ``utf8``).

        Nothing is committed yet, so every failure here is a plain permanent
        or transient one; a kept session found closed is replaced once.
        """
        while True:
            session, kept = await self._session()
            try:
                if utf8 and not session.supports_extension("smtputf8"):
                    raise PermanentDeliveryError(self.name, "server cannot take a UTF-8 address")
                options = [b"SMTPUTF8"] if utf8 else []
                encoding = "utf-8" if utf8 else "ascii"
                sender = self._reverse_path.encode(encoding)
                answer = await session.execute_command(b"MAIL", b"FROM:" + sender, *options)
                if answer.code != SMTPStatus.completed:
                    raise aiosmtplib.SMTPSenderRefused(answer.code, answer.message, "")
                path = f"<{recipient}>".encode(encoding)
                answer = await session.execute_command(b"RCPT", b"TO:" + path)
                if answer.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
                    raise aiosmtplib.SMTPRecipientRefused(answer.code, answer.message, "")
                return session
            except aiosmtplib.SMTPServerDisconnected:
                session.close()
                if kept:
                    continue
                raise TransientDeliveryError(self.name, "SMTP server closed the session") from None
            except aiosmtplib.SMTPRecipientRefused as exc:
                # The refusal carries the address: keep only the reply code.
                session.close()
                raise _by_code(self.name, "recipient refused", exc.code) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                # Sender refused or the session failed: our side, not the address.
                session.close()
                raise _session_failure(self.name, exc) from None
            except BaseException:
                session.close()
                raise

    async def _session(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A kept session (True) or a new one, connected, upgraded and logged in (False)."""
        while self._idle:
            session = self._idle.pop()
            if session.is_connected:
                return session, True
        config = self._config
        session = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            start_tls=_START_TLS[config.starttls],
            username=config.username,
            password=config.password,
            timeout=config.timeout_seconds,
            tls_context=config.tls_context,
        )
        try:
            await session.connect()
            if session.is_ehlo_or_helo_needed:  # so its extensions (SMTPUTF8) are known
                await session.ehlo()
        except (aiosmtplib.SMTPException, OSError) as exc:
            session.close()
            raise _session_failure(self.name, exc) from None
        return session, False

    def _message(
        self,
        notice: Notice,
        recipient: str,
        message_id: str,
        idempotency_key: str,
        *,
        utf8: bool,
    ) -> bytes:
        # Every header is short and ASCII but for the two encoded (and cached)
        # ones, and a non-ASCII recipient, which goes raw over SMTPUTF8.
        boundary = f"=_{secrets.token_hex(16)}"
        head = "\n".join(
            (
                f"From: {_sender(notice.sender, self._config.from_address)}",
                f"To: {recipient}",
                f"Subject: {_encoded(notice.subject)}",
                f"Date: {formatdate(localtime=False, usegmt=True)}",
                f"Message-ID: {message_id}",
                f"{IDEMPOTENCY_HEADER}: {idempotency_key}",
                f"Content-Language: {notice.language}",
                "MIME-Version: 1.0",
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
                "",
                f"--{boundary}",
                _text_part("plain", notice.text),
                f"--{boundary}",
                _text_part("html", notice.html),
                f"--{boundary}--",
                "",
            )
        )
        return head.encode("utf-8" if utf8 else "ascii")


@functools.lru_cache(maxsize=1024)
def _encoded(text: str) -> str:
    """``text`` as RFC 2047 encoded words, folded (the same for a whole breach: cached)."""
    return Header(text, "utf-8").encode()


@functools.lru_cache(maxsize=1024)
def _sender(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


def _text_part(subtype: str, content: str) -> str:
    """A quoted-printable body part (7-bit, so no line of it can look like the boundary:
    "=_" is not a quoted-printable escape)."""
    body = binascii.b2a_qp(content.encode("utf-8"), istext=True).decode("ascii")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\n'
        "MIME-Version: 1.0\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        f"\n{body}"
    )


_START_TLS: dict[StartTls, bool | None] = {
    StartTls.OFF: False,
    StartTls.OPPORTUNISTIC: None,
    StartTls.REQUIRED: True,
}


def _checked_address(channel: str, address: str) -> str:
    """The address as the match keys see it (IDNA domain), or a permanent failure.

    Placeholders such as "noreply@..." count as unusable, like malformed ones.
    """
    try:
        return normalise_email(address)
    except IdentifierError as exc:
        raise PermanentDeliveryError(channel, f"e-mail address unusable ({exc})") from None


def _session_failure(channel: str, exc: Exception) -> TransientDeliveryError:
    """Opening a session, or MAIL FROM, failed: a reply code means the server refused
    our configuration (greeting, STARTTLS, login, sender), anything else a broken
    connection; either may pass later, and neither says anything about the address."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransientDeliveryError(channel, f"server refused the session ({exc.code})")
    return TransientDeliveryError(channel, f"SMTP session failed ({type(exc).__name__})")


def _by_code(channel: str, what: str, code: int) -> PermanentDeliveryError | TransientDeliveryError:
    """SMTP 5xx is final for this address; 4xx (and anything odd) may pass later."""
    if 500 <= code < 600:
        return PermanentDeliveryError(channel, f"{what} ({code})")
    return TransientDeliveryError(channel, f"{what} ({code})")
