"""E-mail over SMTP: a multipart (plain text + HTML) notice per patient.

Each send opens its own SMTP session: notices go out at a rate-limited trickle,
so a pool would buy little and would have to survive server restarts. The
Message-ID and an ``X-Breachmatch-Idempotency-Key`` header are derived from the
idempotency key, so a retry after a crash carries the same ids and a duplicate
can be spotted (and dropped) downstream.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import aiosmtplib

from breachmatch.identifiers import IdentifierError, normalise_email
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    EMAIL,
    Channel,
    DeliveryResult,
    PermanentDeliveryError,
    TransientDeliveryError,
    message_uuid,
)
from breachmatch_notifier.notice import Notice

IDEMPOTENCY_HEADER = "X-Breachmatch-Idempotency-Key"


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

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str
    ) -> DeliveryResult:
        recipient = _checked_address(self.name, contact.email)
        message_id = f"<{message_uuid(idempotency_key)}@{self._from_domain}>"
        message = self._message(notice, recipient, message_id, idempotency_key)
        config = self._config
        try:
            await aiosmtplib.send(
                message,
                hostname=config.host,
                port=config.port,
                start_tls=_START_TLS[config.starttls],
                username=config.username,
                password=config.password,
                timeout=config.timeout_seconds,
                tls_context=config.tls_context,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # The refusal carries the address: keep only the reply code.
            codes = [refusal.code for refusal in exc.recipients]
            raise _by_code(self.name, "recipient refused", codes[0] if codes else 0) from None
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise _by_code(self.name, "recipient refused", exc.code) from None
        except aiosmtplib.SMTPDataError as exc:
            raise _by_code(self.name, "message refused", exc.code) from None
        except aiosmtplib.SMTPResponseException as exc:
            # Sender refused, authentication, HELO: our configuration, not the address.
            raise TransientDeliveryError(
                self.name, f"server refused the session ({exc.code})"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(
                self.name, f"SMTP session failed ({type(exc).__name__})"
            ) from None
        return DeliveryResult(
            channel=self.name, idempotency_key=idempotency_key, reference=message_id
        )

    def _message(
        self, notice: Notice, recipient: str, message_id: str, idempotency_key: str
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr((notice.sender, self._config.from_address))
        message["To"] = recipient
        message["Subject"] = notice.subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id
        message[IDEMPOTENCY_HEADER] = idempotency_key
        message.set_content(notice.text)
        message.add_alternative(notice.html, subtype="html")
        # After the parts exist: add_alternative moves Content-* headers into the first part.
        message["Content-Language"] = notice.language
        return message


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
