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

Sessions are kept open between notices (a small pool per process, one
session per concurrent send), so a notice costs a MAIL, RCPT and DATA
exchange rather than a new TCP connection, EHLO, STARTTLS and login. A kept
session the server has closed meanwhile is noticed at MAIL — before anything
is committed — and replaced once.

The message is built with the standard library's compat32 MIME classes, not
`email.message.EmailMessage`: the latter parses every header it is given and
re-folds it on output, several milliseconds of CPU per notice. The subject and
the sender are the same for every notice of one hospital and breach, so their
encoded forms are cached; the bodies are quoted-printable (7-bit, readable by
any relay) through the C codec in `binascii`.
"""

from __future__ import annotations

import binascii
import email.policy
import enum
import functools
import ssl
from dataclasses import dataclass, field
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate

import aiosmtplib

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
#: Most idle sessions kept open per process.
MAX_IDLE_SESSIONS = 16


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
    #: Trust anchors for the server certificate; None uses the system store.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)


class EmailChannel(Channel):
    def __init__(self, config: SmtpConfig, name: str = EMAIL) -> None:
        super().__init__(name)
        self._config = config
        self._from_domain = config.from_address.rpartition("@")[2] or "localhost"
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        recipient = _checked_address(self.name, contact.email)
        message_id = f"<{message_uuid(idempotency_key)}@{self._from_domain}>"
        utf8 = not (recipient + self._config.from_address).isascii()
        message = self._message(notice, recipient, message_id, idempotency_key, utf8=utf8)
        session = await self._envelope(recipient, utf8=utf8)
        try:
            await intent.commit(self.name, message_id)
        except BaseException:
            session.close()  # DATA never started: the server drops the transaction
            raise
        try:
            await session.data(message)
        except aiosmtplib.SMTPResponseException as exc:  # an answer: the server did not take it
            session.close()
            raise _by_code(self.name, "message refused", exc.code) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            session.close()
            raise DeliveryOutcomeUnknownError(
                self.name, f"SMTP session ended during DATA ({type(exc).__name__})"
            ) from None
        if len(self._idle) < MAX_IDLE_SESSIONS:
            self._idle.append(session)
        else:
            session.close()
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
                options = ["SMTPUTF8"] if utf8 else []
                encoding = "utf-8" if utf8 else "ascii"
                await session.mail(self._config.from_address, options=options, encoding=encoding)
                await session.rcpt(recipient, encoding=encoding)
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
            except aiosmtplib.SMTPResponseException as exc:
                # Sender refused: our configuration, not the address.
                session.close()
                raise TransientDeliveryError(
                    self.name, f"server refused the session ({exc.code})"
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                session.close()
                raise TransientDeliveryError(
                    self.name, f"SMTP session failed ({type(exc).__name__})"
                ) from None
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
        except aiosmtplib.SMTPResponseException as exc:
            # Greeting, HELO, STARTTLS or authentication refused: our configuration.
            session.close()
            raise TransientDeliveryError(
                self.name, f"server refused the session ({exc.code})"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            session.close()
            raise TransientDeliveryError(
                self.name, f"SMTP session failed ({type(exc).__name__})"
            ) from None
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
        message = MIMEMultipart("alternative")
        message["From"] = _sender(notice.sender, self._config.from_address)
        message["To"] = recipient
        message["Subject"] = _encoded(notice.subject)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id
        message[IDEMPOTENCY_HEADER] = idempotency_key
        message["Content-Language"] = notice.language
        message.attach(_text_part("plain", notice.text))
        message.attach(_text_part("html", notice.html))
        # An address beyond ASCII stays raw UTF-8 (SMTPUTF8), never an encoded word.
        return message.as_bytes(policy=email.policy.SMTPUTF8) if utf8 else message.as_bytes()


@functools.lru_cache(maxsize=1024)
def _encoded(text: str) -> str:
    """``text`` as RFC 2047 encoded words, folded (the same for a whole breach: cached)."""
    return Header(text, "utf-8").encode()


@functools.lru_cache(maxsize=1024)
def _sender(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


def _text_part(subtype: str, content: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(content.encode("utf-8"), istext=True).decode("ascii"))
    return part


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


def _by_code(channel: str, what: str, code: int) -> PermanentDeliveryError | TransientDeliveryError:
    """SMTP 5xx is final for this address; 4xx (and anything odd) may pass later."""
    if 500 <= code < 600:
        return PermanentDeliveryError(channel, f"{what} ({code})")
    return TransientDeliveryError(channel, f"{what} ({code})")
