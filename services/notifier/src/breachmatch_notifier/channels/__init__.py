"""Delivery channels: e-mail, SMS, Digital Post and dry-run, with routing.

Most callers need only this::

    dispatcher = Dispatcher.from_config(ChannelsConfig.from_env())
    result = await dispatcher.deliver(notice, contact, idempotency_key, claim)

`deliver` raises `TransientDeliveryError` (retry later), `UndeliverableError`
(a `PermanentDeliveryError`: do not retry) or `DeliveryOutcomeUnknownError`
(hold for review); ``claim`` records the intent before an unrepeatable send
(`breachmatch_notifier.claims.Claim`).
"""

from breachmatch_notifier.channels.base import (
    ADDRESS_FIELD,
    DIGITAL_POST,
    DRY_RUN,
    EMAIL,
    SMS,
    Channel,
    DeliveryError,
    DeliveryOutcomeUnknownError,
    DeliveryResult,
    PermanentDeliveryError,
    SendIntent,
    TransientDeliveryError,
    message_uuid,
)
from breachmatch_notifier.channels.config import ChannelConfigError, ChannelsConfig, build_channels
from breachmatch_notifier.channels.digital_post import DigitalPostChannel, DigitalPostConfig
from breachmatch_notifier.channels.dispatch import (
    DEFAULT_ORDER,
    Dispatcher,
    UndeliverableError,
    route,
)
from breachmatch_notifier.channels.dry_run import DryRunChannel, DryRunLog
from breachmatch_notifier.channels.email import EmailChannel, SmtpConfig, StartTls
from breachmatch_notifier.channels.ratelimit import SharedRateLimit, shared_rate_limits
from breachmatch_notifier.channels.sms import SmsChannel, SmsGatewayConfig

__all__ = [
    "ADDRESS_FIELD",
    "DEFAULT_ORDER",
    "DIGITAL_POST",
    "DRY_RUN",
    "EMAIL",
    "SMS",
    "Channel",
    "ChannelConfigError",
    "ChannelsConfig",
    "DeliveryError",
    "DeliveryOutcomeUnknownError",
    "DeliveryResult",
    "DigitalPostChannel",
    "DigitalPostConfig",
    "Dispatcher",
    "DryRunChannel",
    "DryRunLog",
    "EmailChannel",
    "PermanentDeliveryError",
    "SendIntent",
    "SharedRateLimit",
    "SmsChannel",
    "SmsGatewayConfig",
    "SmtpConfig",
    "StartTls",
    "TransientDeliveryError",
    "UndeliverableError",
    "build_channels",
    "message_uuid",
    "route",
    "shared_rate_limits",
]
