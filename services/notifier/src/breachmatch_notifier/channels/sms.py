"""SMS through an HTTP gateway: one JSON POST per notice.

Gateways differ only in the shape of that POST, so the body keys, fixed extra
fields (a sender name, an account id) and the auth header are configuration.
The split between failures follows HTTP: a 4xx means the gateway will never
take this message (bad number, refused content) so the next channel is tried;
5xx, 408, 429, timeouts and refused connections mean "later". The idempotency
key goes along (as ``Idempotency-Key`` and, if configured, in the body) so a
gateway that deduplicates can drop a retry of a message it already sent.

Whether it does is configuration (``deduplicates``), because it decides what a
crash mid-request means (`breachmatch_notifier.claims`): a deduplicating
gateway is simply asked again; otherwise the intent is recorded before the
POST, and a request cut off after it was sent (timeout, dropped connection)
is an unknown outcome, held for review rather than sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from breachmatch.identifiers import IdentifierError, normalise_phone
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    SMS,
    Channel,
    DeliveryOutcomeUnknownError,
    DeliveryResult,
    PermanentDeliveryError,
    SendIntent,
    TransientDeliveryError,
    message_uuid,
)
from breachmatch_notifier.notice import Notice

_RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class SmsGatewayConfig:
    url: str
    token: str | None = field(default=None, repr=False)
    auth_header: str = "Authorization"
    #: Prefix of the token in ``auth_header``; "" sends the bare token.
    auth_scheme: str = "Bearer"
    to_key: str = "to"
    text_key: str = "text"
    #: Body key for the idempotency key; None leaves it out of the body.
    reference_key: str | None = "reference"
    #: Fixed fields sent with every message, e.g. {"from": "Rigshospitalet"}.
    extra_fields: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0
    #: The gateway drops a message whose reference it has already taken.
    deduplicates: bool = False


class SmsChannel(Channel):
    """Keeps one HTTP session (connection pool) for its lifetime; call `aclose`."""

    parts = ("sms_text",)

    def __init__(self, config: SmsGatewayConfig, name: str = SMS) -> None:
        super().__init__(name)
        self._config = config
        self._session: aiohttp.ClientSession | None = None
        self.deduplicates = config.deduplicates

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        config = self._config
        try:
            number = normalise_phone(contact.phone)
        except IdentifierError as exc:
            raise PermanentDeliveryError(self.name, f"phone number unusable ({exc})") from None
        reference = str(message_uuid(idempotency_key))
        body: dict[str, str] = dict(config.extra_fields)
        body[config.to_key] = number
        body[config.text_key] = notice.sms_text
        if config.reference_key:
            body[config.reference_key] = idempotency_key
        headers = {"Idempotency-Key": idempotency_key}
        if config.token:
            headers[config.auth_header] = f"{config.auth_scheme} {config.token}".strip()
        if not self.deduplicates:
            await intent.commit(self.name, reference)
        try:
            async with self._client().post(
                config.url, json=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
            raise TransientDeliveryError(
                self.name, f"gateway unreachable ({type(exc).__name__})"
            ) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            reason = f"gateway request cut off ({type(exc).__name__})"
            if self.deduplicates:
                raise TransientDeliveryError(self.name, reason) from None
            raise DeliveryOutcomeUnknownError(self.name, reason) from None
        # The response body is never read into an error: gateways echo the number.
        if 200 <= status < 300:
            return DeliveryResult(
                channel=self.name, idempotency_key=idempotency_key, reference=reference
            )
        if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS:
            raise PermanentDeliveryError(self.name, f"gateway refused the message ({status})")
        raise TransientDeliveryError(self.name, f"gateway answered {status}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession belongs to the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.timeout_seconds)
            )
        return self._session
