"""Which channels exist, built from configuration (or the deployment's environment).

The environment names are the deployment's contract (ConfigMap and Secret in
``deploy/``): ``BREACHMATCH_SMTP_*``, ``BREACHMATCH_SMS_GATEWAY_*``,
``BREACHMATCH_DIGITAL_POST_*``, ``BREACHMATCH_RATE_LIMIT_<CHANNEL>`` (notices
per second for the whole deployment: the replicas share it, `channels.ratelimit`)
and ``BREACHMATCH_NOTIFIER_DRY_RUN``. A channel is offered when
its address setting is present; errors name the variable, never its value
(the password and token are among them).
"""

from __future__ import annotations

import math
import os
from argparse import ArgumentTypeError
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from breachmatch.settings import switch
from breachmatch_notifier.channels.base import DIGITAL_POST, DRY_RUN, EMAIL, SMS, Channel
from breachmatch_notifier.channels.digital_post import DigitalPostChannel, DigitalPostConfig
from breachmatch_notifier.channels.dry_run import DryRunChannel, DryRunLog
from breachmatch_notifier.channels.email import (
    DEFAULT_SESSIONS,
    EmailChannel,
    SmtpConfig,
    StartTls,
)
from breachmatch_notifier.channels.sms import SmsChannel, SmsGatewayConfig

DRY_RUN_VARIABLE = "BREACHMATCH_NOTIFIER_DRY_RUN"
RATE_LIMIT_PREFIX = "BREACHMATCH_RATE_LIMIT_"
#: More concurrent sessions than a relay would let one client open.
_MAX_SESSIONS = 256

_Getter = Callable[[str], str]


class ChannelConfigError(ValueError):
    """The channel configuration cannot work; the service must not start."""


@dataclass(frozen=True, slots=True)
class ChannelsConfig:
    smtp: SmtpConfig | None = None
    sms: SmsGatewayConfig | None = None
    digital_post: DigitalPostConfig | None = None
    #: Demo mode: every channel name is served by a counting stand-in, nothing is sent.
    dry_run: bool = False
    #: Notices per second per channel name; a channel not listed is not limited.
    rate_limits: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChannelsConfig:
        """Read the deployment's variables (``os.environ`` by default)."""
        values = os.environ if env is None else env

        def get(name: str) -> str:
            return values.get(name, "").strip()

        return cls(
            smtp=_smtp_from_env(get) if get("BREACHMATCH_SMTP_HOST") else None,
            sms=(
                SmsGatewayConfig(
                    url=get("BREACHMATCH_SMS_GATEWAY_URL"),
                    token=get("BREACHMATCH_SMS_GATEWAY_TOKEN") or None,
                )
                if get("BREACHMATCH_SMS_GATEWAY_URL")
                else None
            ),
            digital_post=(
                DigitalPostConfig(
                    outbox=Path(get("BREACHMATCH_DIGITAL_POST_OUTBOX")),
                    sender_id=get("BREACHMATCH_DIGITAL_POST_SENDER_ID") or None,
                )
                if get("BREACHMATCH_DIGITAL_POST_OUTBOX")
                else None
            ),
            dry_run=_switch(DRY_RUN_VARIABLE, get),
            rate_limits={
                name: _positive_float(RATE_LIMIT_PREFIX + name.upper(), get)
                for name in (EMAIL, SMS, DIGITAL_POST, DRY_RUN)
                if get(RATE_LIMIT_PREFIX + name.upper())
            },
        )


def build_channels(
    config: ChannelsConfig, dry_run_log: DryRunLog | None = None
) -> dict[str, Channel]:
    """The channels ``config`` offers, by name; raises `ChannelConfigError` if none."""
    if config.dry_run:
        log = dry_run_log or DryRunLog()
        return {name: DryRunChannel(log, name) for name in (EMAIL, SMS, DIGITAL_POST, DRY_RUN)}
    channels: dict[str, Channel] = {}
    if config.smtp is not None:
        channels[EMAIL] = EmailChannel(config.smtp)
    if config.sms is not None:
        channels[SMS] = SmsChannel(config.sms)
    if config.digital_post is not None:
        if not config.digital_post.outbox.is_dir():
            raise ChannelConfigError("BREACHMATCH_DIGITAL_POST_OUTBOX: not a directory")
        channels[DIGITAL_POST] = DigitalPostChannel(config.digital_post)
    if not channels:
        raise ChannelConfigError(
            "no channel configured: set BREACHMATCH_SMTP_HOST, BREACHMATCH_SMS_GATEWAY_URL "
            f"or BREACHMATCH_DIGITAL_POST_OUTBOX (or {DRY_RUN_VARIABLE}=1 for a demo)"
        )
    return channels


def _smtp_from_env(get: _Getter) -> SmtpConfig:
    from_address = get("BREACHMATCH_SMTP_FROM")
    if not from_address:
        raise ChannelConfigError(
            "BREACHMATCH_SMTP_FROM: required when BREACHMATCH_SMTP_HOST is set"
        )
    username = get("BREACHMATCH_SMTP_USERNAME") or None
    password = get("BREACHMATCH_SMTP_PASSWORD") or None
    if (username is None) != (password is None):
        raise ChannelConfigError(
            "BREACHMATCH_SMTP_USERNAME and BREACHMATCH_SMTP_PASSWORD: set both or neither"
        )
    starttls = get("BREACHMATCH_SMTP_STARTTLS").lower() or StartTls.OPPORTUNISTIC.value
    try:
        mode = StartTls(starttls)
    except ValueError:
        choices = ", ".join(mode.value for mode in StartTls)
        raise ChannelConfigError(f"BREACHMATCH_SMTP_STARTTLS: must be one of {choices}") from None
    port = get("BREACHMATCH_SMTP_PORT") or "25"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ChannelConfigError("BREACHMATCH_SMTP_PORT: must be a port number")
    sessions = get("BREACHMATCH_SMTP_SESSIONS") or str(DEFAULT_SESSIONS)
    if not sessions.isdigit() or not 0 < int(sessions) <= _MAX_SESSIONS:
        raise ChannelConfigError(
            f"BREACHMATCH_SMTP_SESSIONS: must be a whole number from 1 to {_MAX_SESSIONS}"
        )
    return SmtpConfig(
        host=get("BREACHMATCH_SMTP_HOST"),
        from_address=from_address,
        port=int(port),
        starttls=mode,
        username=username,
        password=password,
        sessions=int(sessions),
    )


def _switch(variable: str, get: _Getter) -> bool:
    """A yes/no variable; unset is no, and an unknown word is an error, not a silent no."""
    try:
        return bool(get(variable)) and switch(get(variable))
    except ArgumentTypeError as error:
        raise ChannelConfigError(f"{variable}: {error}") from None


def _positive_float(variable: str, get: _Getter) -> float:
    try:
        value = float(get(variable))
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise ChannelConfigError(f"{variable}: must be a positive number (notices per second)")
    return value
