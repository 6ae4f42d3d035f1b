"""Choosing the channel for each notice, with fallback, under rate limits.

The patient's own channel order comes first (the hospital knows how each
patient wants to be reached); the default is e-mail, then SMS, then Digital
Post. Channels whose address field is empty are skipped before anything is
tried, and a channel that fails *permanently* hands over to the next one. A
*transient* failure stops the attempt and is raised: the worker retries the
whole delivery later with the same idempotency key, so the ids the channels
derive from it stay the same. Either failure from a channel that may have
recorded an intent withdraws it (the channel asserts nothing went out); an
unknown outcome is raised as it is, intent and all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from breachmatch.logs import get_logger
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    ADDRESS_FIELD,
    DIGITAL_POST,
    EMAIL,
    SMS,
    Channel,
    DeliveryResult,
    PermanentDeliveryError,
    SendIntent,
    TransientDeliveryError,
)
from breachmatch_notifier.channels.config import ChannelsConfig, build_channels
from breachmatch_notifier.channels.dry_run import DryRunLog
from breachmatch_notifier.notice import Notice

DEFAULT_ORDER: tuple[str, ...] = (EMAIL, SMS, DIGITAL_POST)

_log = get_logger(__name__)


class UndeliverableError(PermanentDeliveryError):
    """No channel could take the notice; ``failures`` says why, channel by channel."""

    def __init__(self, failures: Sequence[PermanentDeliveryError]) -> None:
        reasons = "; ".join(str(failure) for failure in failures)
        super().__init__("dispatch", reasons or "no configured channel can reach this contact")
        self.failures = tuple(failures)


def route(contact: ContactDetails, configured_channels: Collection[str]) -> list[str]:
    """The channels to try for ``contact``, best first.

    The contact's ``channels`` order (or `DEFAULT_ORDER`), keeping only
    channels that are configured and whose address field is filled in;
    unknown names and repeats are dropped.
    """
    preferred = [name.strip().lower() for name in contact.channels] or list(DEFAULT_ORDER)
    order: list[str] = []
    for name in preferred:
        if name in order or name not in configured_channels or name not in ADDRESS_FIELD:
            continue
        address_field = ADDRESS_FIELD[name]
        if address_field is not None and not getattr(contact, address_field).strip():
            continue
        order.append(name)
    return order


class RateLimit(Protocol):
    async def acquire(self) -> None:
        """Wait until one more notice may go out on the channel."""


class Dispatcher:
    """Delivers notices over the configured channels; one per notifier process."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        rate_limits: Mapping[str, RateLimit] | None = None,
    ) -> None:
        self._channels = dict(channels)
        self._rate_limits = dict(rate_limits or {})

    @classmethod
    def from_config(
        cls, config: ChannelsConfig, *, dry_run_log: DryRunLog | None = None
    ) -> Dispatcher:
        """Build the channels; raises `ChannelConfigError`.

        Their rate limits are shared with the other replicas through NATS, so
        they are added once connected (`limit`).
        """
        return cls(build_channels(config, dry_run_log))

    def limit(self, rate_limits: Mapping[str, RateLimit]) -> None:
        """Hold each named channel to its rate limit from now on."""
        self._rate_limits.update(rate_limits)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def route(self, contact: ContactDetails) -> list[str]:
        return route(contact, self._channels)

    async def deliver(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        """Send over the first channel that takes it.

        Raises `TransientDeliveryError` (retry later), `UndeliverableError`
        (a `PermanentDeliveryError`: every routed channel refused, or none
        fits) or `DeliveryOutcomeUnknownError` (hold it: see
        `breachmatch_notifier.claims`); `NoticeError` when a part the channel
        sends cannot be rendered (an SMS over the segment limit), before that
        channel is tried.
        """
        failures: list[PermanentDeliveryError] = []
        for name in self.route(contact):
            channel = self._channels[name]
            # Before the rate limit and any intent: a part that cannot be sent raises NoticeError.
            notice.prepare(channel.parts)
            limit = self._rate_limits.get(name)
            if limit is not None:
                await limit.acquire()
            try:
                result = await channel.send(notice, contact, idempotency_key, intent)
            except PermanentDeliveryError as exc:
                _log.warning("channel failed permanently", channel=name, reason=exc.reason)
                if not channel.deduplicates:
                    await intent.withdraw()
                failures.append(exc)
                continue
            except TransientDeliveryError as exc:
                _log.warning("channel failed transiently", channel=name, reason=exc.reason)
                if not channel.deduplicates:
                    await intent.withdraw()
                raise
            failed = tuple(failure.channel for failure in failures)
            if failed:  # the worker's summary line counts every notice sent; this says how
                _log.debug("notice delivered", channel=name, failed_channels=list(failed))
            return replace(result, failed_channels=failed)
        raise UndeliverableError(failures)

    async def aclose(self) -> None:
        for channel in self._channels.values():
            await channel.aclose()
