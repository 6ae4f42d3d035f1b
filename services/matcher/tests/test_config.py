"""Configuration: every serve flag falls back to its documented environment variable."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from breachmatch_matcher.cli import main
from breachmatch_matcher.config import (
    DEFAULT_GRPC_ADDR,
    MatcherConfig,
    add_serve_arguments,
    config_from_args,
)


def _parse(argv: list[str]) -> MatcherConfig:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return config_from_args(parser, parser.parse_args(argv))


def test_environment_fills_what_flags_leave_out(monkeypatch, tmp_path):
    env = {
        "BREACHMATCH_NATS_URL": "nats://nats.example:4222",
        "BREACHMATCH_TLS_DIR": str(tmp_path / "tls"),
        "BREACHMATCH_OPRF_KEY_DIR": str(tmp_path / "oprf"),
        "BREACHMATCH_VERIFY_KEY": str(tmp_path / "verify.pub"),
        "BREACHMATCH_NOTIFIER_STATEMENT": str(tmp_path / "notifier.statement"),
        "BREACHMATCH_MAX_BATCH": "123",
        "BREACHMATCH_WORKERS": "3",
        "BREACHMATCH_METRICS_ADDR": "off",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = _parse(["--max-batch", "77"])  # a flag beats its variable
    assert config.nats_url == "nats://nats.example:4222"
    assert config.tls_dir == tmp_path / "tls"
    assert config.oprf_key_dir == tmp_path / "oprf"
    assert config.max_batch == 77
    assert config.workers == 3
    assert config.metrics_addr is None  # "off" disables
    assert config.grpc_addr == DEFAULT_GRPC_ADDR


def test_message_cap_follows_the_batch_limit():
    paths = {name: Path(name) for name in ("t", "o", "v", "n")}
    small = MatcherConfig(paths["t"], paths["o"], paths["v"], paths["n"], max_batch=16)
    large = MatcherConfig(paths["t"], paths["o"], paths["v"], paths["n"], max_batch=1 << 20)
    assert small.server_config().max_message_bytes >= 1024 * 1024  # a body chunk fits
    assert large.server_config().max_message_bytes >= (1 << 20) * 34  # a full batch fits


@pytest.mark.parametrize("flag", ["--tls-dir", "--oprf-key-dir"])
def test_serve_refuses_to_start_without_required_paths(flag, capsys, monkeypatch):
    for name in ("BREACHMATCH_TLS_DIR", "BREACHMATCH_OPRF_KEY_DIR", "BREACHMATCH_VERIFY_KEY",
                 "BREACHMATCH_NOTIFIER_STATEMENT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    args = ["serve", "--tls-dir", "t", "--oprf-key-dir", "o", "--verify-key", "v",
            "--notifier-statement", "n"]  # fmt: skip
    position = args.index(flag)
    del args[position : position + 2]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert f"{flag} is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag", ["--tenants-file", "--verify-key", "--notifier-statement", "--oprf-key-dir"]
)
def test_an_unreadable_file_stops_start_up_with_status_2(
    flag, matcher_files, tmp_path, capsys, monkeypatch
):
    """Files are read before anything connects: the dead NATS port below is never tried."""
    for name in ("BREACHMATCH_LOG_FORMAT", "BREACHMATCH_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    config = matcher_files.config("nats://127.0.0.1:1")
    paths = {
        "--tls-dir": config.tls_dir,
        "--tenants-file": config.tenants_file,
        "--verify-key": config.verify_key,
        "--notifier-statement": config.notifier_statement,
        "--oprf-key-dir": config.oprf_key_dir,
    }
    paths[flag] = tmp_path / "missing"
    argv = ["serve", "--nats-url", config.nats_url, "--log-format", "json"]
    argv += ["--grpc-addr", "127.0.0.1:0", "--health-addr", "off", "--metrics-addr", "off"]
    for name, path in paths.items():
        argv += [name, str(path)]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(argv) == 2
    finally:
        root.handlers, root.level = handlers, level
    err = capsys.readouterr().err
    assert "refusing to start: configuration" in err
    assert "Traceback" not in err
