"""No identifier reaches a log line, whichever way it is logged."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from breachmatch import logs

CPR = "010170-1234"
CPR_PLAIN = "0101701234"
ECPR = "010170AB12"
SSN = "123-45-6789"
EMAIL = "Karen.Jensen@Example.DK"
PHONE = "+45 12 34 56 78"
NAME = "Søren Ærø Ågård"
SECRETS = [CPR, CPR_PLAIN, ECPR, SSN, EMAIL, PHONE, "12345678", NAME]


@pytest.fixture
def captured():
    stream = io.StringIO()
    logs.configure_logging("test", level="DEBUG", fmt="json", stream=stream)
    yield stream
    logs.configure_logging("test", fmt="console", stream=io.StringIO())


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"identifier leaked into log output: {secret!r}"


def test_identifier_keys_are_redacted_at_any_depth(captured):
    log = logs.get_logger("t")
    log.info(
        "row parsed",
        cpr=CPR,
        email=EMAIL,
        nested={"contact": {"phone": PHONE}, "people": [{"name": NAME}], "count": 3},
        rows=7,
    )
    [line] = lines(captured)
    assert_clean(captured.getvalue())
    assert line["cpr"] == logs.REDACTED
    assert line["nested"]["count"] == 3
    assert line["rows"] == 7


def test_identifier_shaped_text_is_scrubbed_from_messages(captured):
    log = logs.get_logger("t")
    log.warning(f"could not parse {CPR} / {CPR_PLAIN} / {ECPR} for {EMAIL}, ssn {SSN}")
    log.info("callback", detail=f"call {PHONE} or 12345678")
    assert_clean(captured.getvalue())
    assert captured.getvalue().count(logs.REDACTED) >= 7


def test_standard_library_logs_and_tracebacks_are_redacted(captured):
    std = logging.getLogger("some.library")
    std.warning("library saw %s", EMAIL)
    try:
        raise ValueError(f"bad value {CPR}")
    except ValueError:
        logs.get_logger("t").exception("failed")
    out = captured.getvalue()
    assert_clean(out)
    assert "ValueError" in out
    assert "library saw" in out


def test_context_is_bound_and_timestamp_is_iso_utc(captured):
    logs.bind(tenant="hospital-a", request_id="r1")
    logs.get_logger("t").info("evaluate", count=12)
    logs.unbind("tenant", "request_id")
    [line] = lines(captured)
    assert line["tenant"] == "hospital-a"
    assert line["service"] == "test"
    assert str(line["timestamp"]).endswith("Z")
    assert line["level"] == "info"


def test_counts_and_ids_survive_redaction(captured):
    logs.get_logger("t").info("breach published", breach_id="alles-2025", entries=57000)
    [line] = lines(captured)
    assert line["breach_id"] == "alles-2025"
    assert line["entries"] == 57000


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "nats://10.0.0.12:4222", "10.255.255.1:50061", "192.168.1.1", "12.34.56.78:80"],
)
def test_network_addresses_are_kept(address: str) -> None:
    """A line saying which address cannot be reached is useless with the address redacted."""
    assert logs.scrub_text(f"cannot reach NATS at {address}") == f"cannot reach NATS at {address}"


@pytest.mark.parametrize(
    "phone", ["70.20.30.40", "+45 70 20 30 40", "12.34.56.78", "3.12.45.67.89"]
)
def test_phone_numbers_written_like_addresses_are_still_redacted(phone: str) -> None:
    assert logs.scrub_text(f"call {phone} today") == f"call {logs.REDACTED} today"
