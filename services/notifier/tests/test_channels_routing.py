"""Channel choice (a pure function) and channel configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels import (
    ChannelConfigError,
    ChannelsConfig,
    Dispatcher,
    StartTls,
    message_uuid,
    route,
)

ALL = ("email", "sms", "digital_post")
EVERYTHING = ContactDetails(email="a@example.dk", phone="+4520304050", cpr="0101901234")


@pytest.mark.parametrize(
    ("contact", "configured", "expected"),
    [
        (EVERYTHING, ALL, ["email", "sms", "digital_post"]),
        (ContactDetails(phone="+4520304050", cpr="0101901234"), ALL, ["sms", "digital_post"]),
        (ContactDetails(email="  "), ALL, []),
        (EVERYTHING, ("sms",), ["sms"]),
        (
            ContactDetails(
                email="a@example.dk", phone="1", channels=["SMS", "fax", "sms", "email"]
            ),
            ALL,
            ["sms", "email"],
        ),
        (
            ContactDetails(cpr="0101901234", channels=["email", "digital_post"]),
            ALL,
            ["digital_post"],
        ),
        (ContactDetails(channels=["dry_run"]), ALL, []),
        (ContactDetails(channels=["dry_run"]), (*ALL, "dry_run"), ["dry_run"]),
    ],
)
def test_route(contact: ContactDetails, configured: tuple[str, ...], expected: list[str]) -> None:
    assert route(contact, configured) == expected


def test_message_uuid_is_stable_and_refuses_header_breaking_keys() -> None:
    assert message_uuid("k-1") == message_uuid("k-1") != message_uuid("k-2")
    for bad in ("", "a b", "k\r\nBcc: x@example.dk", "æ", "x" * 201):
        with pytest.raises(ValueError, match="idempotency_key"):
            message_uuid(bad)


def test_from_env_reads_the_deployment_names(tmp_path: Path) -> None:
    config = ChannelsConfig.from_env(
        {
            "BREACHMATCH_SMTP_HOST": "smtp.internal",
            "BREACHMATCH_SMTP_PORT": "587",
            "BREACHMATCH_SMTP_STARTTLS": "required",
            "BREACHMATCH_SMTP_USERNAME": "notifier",
            "BREACHMATCH_SMTP_PASSWORD": "pw-123",
            "BREACHMATCH_SMTP_FROM": "noreply@hospital.example.dk",
            "BREACHMATCH_SMTP_SESSIONS": "40",
            "BREACHMATCH_SMS_GATEWAY_URL": "http://sms-gateway:8080/send",
            "BREACHMATCH_SMS_GATEWAY_TOKEN": "tok-456",
            "BREACHMATCH_DIGITAL_POST_OUTBOX": str(tmp_path),
            "BREACHMATCH_RATE_LIMIT_SMS": "2.5",
        }
    )
    assert config.smtp is not None
    assert (config.smtp.host, config.smtp.port, config.smtp.starttls) == (
        "smtp.internal",
        587,
        StartTls.REQUIRED,
    )
    assert (config.smtp.username, config.smtp.password) == ("notifier", "pw-123")
    assert config.smtp.sessions == 40
    assert "pw-123" not in repr(config)
    assert config.sms is not None
    assert config.sms.token == "tok-456"
    assert "tok-456" not in repr(config)
    assert config.digital_post is not None
    assert config.digital_post.outbox == tmp_path
    assert config.rate_limits == {"sms": 2.5}
    assert not config.dry_run
    dispatcher = Dispatcher.from_config(config)
    assert dispatcher.channel_names == ("email", "sms", "digital_post")


def test_from_env_with_only_sms() -> None:
    config = ChannelsConfig.from_env({"BREACHMATCH_SMS_GATEWAY_URL": "http://gw/send"})
    assert (config.smtp, config.digital_post) == (None, None)
    assert Dispatcher.from_config(config).channel_names == ("sms",)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"BREACHMATCH_SMTP_HOST": "h"}, "BREACHMATCH_SMTP_FROM"),
        (
            {
                "BREACHMATCH_SMTP_HOST": "h",
                "BREACHMATCH_SMTP_FROM": "a@b.dk",
                "BREACHMATCH_SMTP_PORT": "x",
            },
            "BREACHMATCH_SMTP_PORT",
        ),
        (
            {
                "BREACHMATCH_SMTP_HOST": "h",
                "BREACHMATCH_SMTP_FROM": "a@b.dk",
                "BREACHMATCH_SMTP_STARTTLS": "maybe",
            },
            "BREACHMATCH_SMTP_STARTTLS",
        ),
        (
            {
                "BREACHMATCH_SMTP_HOST": "h",
                "BREACHMATCH_SMTP_FROM": "a@b.dk",
                "BREACHMATCH_SMTP_PASSWORD": "hunter2",
            },
            "BREACHMATCH_SMTP_PASSWORD",
        ),
        *(
            (
                {
                    "BREACHMATCH_SMTP_HOST": "h",
                    "BREACHMATCH_SMTP_FROM": "a@b.dk",
                    "BREACHMATCH_SMTP_SESSIONS": sessions,
                },
                "BREACHMATCH_SMTP_SESSIONS",
            )
            for sessions in ("0", "many", "100000")
        ),
        ({"BREACHMATCH_RATE_LIMIT_EMAIL": "-3"}, "BREACHMATCH_RATE_LIMIT_EMAIL"),
        ({"BREACHMATCH_RATE_LIMIT_SMS": "nan"}, "BREACHMATCH_RATE_LIMIT_SMS"),
        # An unknown word used to mean "no": a demo switch must not silently send for real.
        ({"BREACHMATCH_NOTIFIER_DRY_RUN": "maybe"}, "BREACHMATCH_NOTIFIER_DRY_RUN"),
    ],
)
def test_bad_environment_names_the_variable_not_the_value(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ChannelConfigError, match=variable) as caught:
        ChannelsConfig.from_env(env)
    assert "hunter2" not in str(caught.value)


def test_no_channel_at_all_refuses_to_start() -> None:
    with pytest.raises(ChannelConfigError, match="no channel configured"):
        Dispatcher.from_config(ChannelsConfig.from_env({}))


def test_outbox_must_exist(tmp_path: Path) -> None:
    env = {"BREACHMATCH_DIGITAL_POST_OUTBOX": str(tmp_path / "missing")}
    with pytest.raises(ChannelConfigError, match="BREACHMATCH_DIGITAL_POST_OUTBOX"):
        Dispatcher.from_config(ChannelsConfig.from_env(env))


def test_dry_run_stands_in_for_every_channel() -> None:
    config = ChannelsConfig.from_env({"BREACHMATCH_NOTIFIER_DRY_RUN": "true"})
    assert config.dry_run
    names = Dispatcher.from_config(config).channel_names
    assert set(names) == {"email", "sms", "digital_post", "dry_run"}
