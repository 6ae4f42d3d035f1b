"""Flags, their environment variables, and what the CLI refuses before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachmatch_dev import DevPki
from breachmatch_notifier.channels import ChannelsConfig
from breachmatch_notifier.cli import build_parser
from breachmatch_notifier.config import DEFAULT_BACKOFF, NotifierConfig, config_from_args

REQUIRED = [
    "--notifier-secret-key",
    "notifier.key",
    "--tenants-file",
    "tenants.json",
    "--verify-key",
    "verify.pub",
]


def parse(argv: list[str]) -> NotifierConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    return config_from_args(args.subparser, args, ChannelsConfig(dry_run=True))


def test_serve_defaults_are_the_deployments_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRPC_ADDR", "HEALTH_ADDR", "METRICS_ADDR", "NOTIFIER_BACKOFF"):
        monkeypatch.delenv(f"BREACHMATCH_{name}", raising=False)
    config = parse(["serve", *REQUIRED, "--tls-dir", "tls"])
    assert (config.grpc_addr, config.health_addr, config.metrics_addr) == (
        "0.0.0.0:50061",
        "0.0.0.0:50062",
        "0.0.0.0:9102",
    )
    assert config.backoff == DEFAULT_BACKOFF
    assert config.server_config().tls_dir == Path("tls")


def test_environment_fills_in_flags_and_flags_win(
    monkeypatch: pytest.MonkeyPatch, dev_pki: DevPki
) -> None:
    monkeypatch.setenv("BREACHMATCH_NOTIFIER_MAX_DELIVER", "7")
    monkeypatch.setenv("BREACHMATCH_NOTIFIER_BACKOFF", "1, 2.5,10")
    monkeypatch.setenv("BREACHMATCH_METRICS_ADDR", "off")
    identity = dev_pki.service_dir("notifier")  # checked on parsing: it must hold the files
    config = parse(["worker", *REQUIRED, "--nats-tls-dir", str(identity), "--max-deliver", "9"])
    assert config.max_deliver == 9
    assert config.nats_tls().cert == identity / "tls.crt"
    assert config.backoff == (1.0, 2.5, 10.0)
    assert config.metrics_addr is None
    assert [config.retry_delay(n) for n in (1, 2, 3, 8)] == [1.0, 2.5, 10.0, 10.0]


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--tenants-file", "tenants.json"],  # no secret key
        # No operator verify key: retractions could not be checked.
        ["worker", *REQUIRED[:4], "--nats-tls-dir", "tls"],
        ["serve", *REQUIRED],  # no TLS directory
        ["worker", *REQUIRED, "--workers-per-process", "0"],  # a worker that does nothing
        ["worker", *REQUIRED],  # no NATS certificate: NATS admits no anonymous worker
        ["worker", *REQUIRED, "--backoff", "5,-1"],
        ["worker", *REQUIRED, "--ack-wait", "0"],
    ],
)
def test_unusable_settings_are_usage_errors(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "NOTIFIER_SECRET_KEY", "VERIFY_KEY", "TLS_DIR", "NATS_TLS_DIR", "NOTIFIER_BACKOFF",
        "NOTIFIER_ACK_WAIT",
    ):  # fmt: skip
        monkeypatch.delenv(f"BREACHMATCH_{name}", raising=False)
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2


def test_serve_may_run_intake_only() -> None:
    config = parse(["serve", *REQUIRED, "--tls-dir", "tls", "--workers-per-process", "0"])
    assert config.workers_per_process == 0
    assert config.nats_tls().cert == Path("tls/tls.crt")  # serve joins NATS as its gRPC identity
