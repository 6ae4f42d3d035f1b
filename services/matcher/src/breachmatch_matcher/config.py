"""Configuration of `breachmatch-matcher serve`: flags, their environment variables, defaults.

Every flag has an environment fallback (`breachmatch.settings`): ``--flag-name``
reads ``BREACHMATCH_FLAG_NAME``, the same names the other services use, so each
process (a pod, or one service of `make demo`) is configured by its own env.

=====================  ===================================  =================
flag                   environment                          default
=====================  ===================================  =================
--nats-url             BREACHMATCH_NATS_URL                 tls://127.0.0.1:4222
--nats-tls-dir         BREACHMATCH_NATS_TLS_DIR             --tls-dir (NATS client certificate)
--connect-timeout      BREACHMATCH_CONNECT_TIMEOUT          30 s, then exit 69
--tls-dir              BREACHMATCH_TLS_DIR                  (required) ca.crt, tls.crt, tls.key
--oprf-key-dir         BREACHMATCH_OPRF_KEY_DIR             (required) one JSON file per key id
--verify-key           BREACHMATCH_VERIFY_KEY               (required) operator Ed25519 key, hex
--notifier-statement   BREACHMATCH_NOTIFIER_STATEMENT       (required) operator-signed notifier key
--tenants-file         BREACHMATCH_TENANTS_FILE             none: default budget for all
--grpc-addr            BREACHMATCH_GRPC_ADDR                0.0.0.0:50051 (mTLS)
--health-addr          BREACHMATCH_HEALTH_ADDR              0.0.0.0:50052 (plaintext; "off")
--metrics-addr         BREACHMATCH_METRICS_ADDR             0.0.0.0:9101 ("off" disables)
--max-batch            BREACHMATCH_MAX_BATCH                4096 elements per request
--workers              BREACHMATCH_WORKERS                  0 = every core
--drain-seconds        BREACHMATCH_DRAIN_SECONDS            20
--cache-dir            BREACHMATCH_CACHE_DIR                system temp dir
--log-format           BREACHMATCH_LOG_FORMAT               auto (json unless a TTY)
--log-level            BREACHMATCH_LOG_LEVEL                INFO
=====================  ===================================  =================
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from breachmatch import tracing
from breachmatch.reachability import DEFAULT_CONNECT_TIMEOUT
from breachmatch.server import ServerConfig
from breachmatch.settings import (
    DEFAULT_NATS_URL,
    add_env_argument,
    add_log_arguments,
    add_nats_arguments,
    host_port,
    nats_tls,
    non_negative_int,
    optional_host_port,
    positive_int,
    positive_seconds,
)
from breachmatch.tls import TlsFiles
from breachmatch_matcher.bodies import CHUNK_SIZE

DEFAULT_GRPC_ADDR = "0.0.0.0:50051"
DEFAULT_HEALTH_ADDR = "0.0.0.0:50052"
DEFAULT_METRICS_ADDR = "0.0.0.0:9101"
DEFAULT_MAX_BATCH = 4096
#: Protobuf framing of one 32-byte `bytes` element: tag and length.
_BYTES_PER_ELEMENT = 34
_MESSAGE_HEADROOM = 64 * 1024
#: ListBreaches returns every served manifest (about 1 KiB each) in one message.
_MIN_MESSAGE_BYTES = 4 * 1024 * 1024
_REQUIRED_PATHS = ("tls_dir", "oprf_key_dir", "verify_key", "notifier_statement")


@dataclass(frozen=True)
class MatcherConfig:
    tls_dir: Path
    oprf_key_dir: Path
    verify_key: Path
    #: The notifier's sealing key in its operator-signed statement (`keys notifier-statement`).
    notifier_statement: Path
    nats_url: str = DEFAULT_NATS_URL
    #: NATS client certificate; None: the gRPC one (`tls_dir`), the matcher's service identity.
    nats_tls_dir: Path | None = None
    #: Seconds start-up keeps trying to reach NATS before it gives up.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    tenants_file: Path | None = None
    grpc_addr: str = DEFAULT_GRPC_ADDR
    health_addr: str | None = DEFAULT_HEALTH_ADDR
    metrics_addr: str | None = DEFAULT_METRICS_ADDR
    max_batch: int = DEFAULT_MAX_BATCH
    workers: int = 0
    drain_seconds: float = 20.0
    cache_dir: Path | None = None
    #: How long start-up may take to replay stream BREACHES before giving up.
    replay_timeout: float = 60.0

    @property
    def evaluation_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def nats_tls(self) -> TlsFiles:
        return nats_tls(self.nats_tls_dir, self.tls_dir)

    def server_config(self) -> ServerConfig:
        """The shared runtime's settings; messages are capped just above what we allow."""
        largest = max(_MIN_MESSAGE_BYTES, CHUNK_SIZE, self.max_batch * _BYTES_PER_ELEMENT)
        return ServerConfig(
            grpc_addr=self.grpc_addr,
            tls_dir=self.tls_dir,
            health_addr=self.health_addr,
            metrics_addr=self.metrics_addr,
            max_message_bytes=largest + _MESSAGE_HEADROOM,
            drain_seconds=self.drain_seconds,
        )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_nats_arguments(parser)
    add_env_argument(
        parser, "--tls-dir", type=Path, help="server TLS directory (ca.crt, tls.crt, tls.key)"
    )
    add_env_argument(parser, "--oprf-key-dir", type=Path, help="OPRF key ring directory")
    add_env_argument(parser, "--verify-key", type=Path, help="operator Ed25519 verify key file")
    add_env_argument(
        parser,
        "--notifier-statement",
        type=Path,
        help="operator-signed statement of the notifier's sealing key (keys notifier-statement)",
    )
    add_env_argument(parser, "--tenants-file", type=Path, help="tenants JSON (budgets)")
    add_env_argument(
        parser,
        "--grpc-addr",
        type=host_port,
        default=DEFAULT_GRPC_ADDR,
        help="mTLS gRPC listen address",
    )
    add_env_argument(
        parser,
        "--health-addr",
        type=optional_host_port,
        default=DEFAULT_HEALTH_ADDR,
        help="plaintext grpc.health.v1 address for probes; 'off' disables",
    )
    add_env_argument(
        parser,
        "--metrics-addr",
        type=optional_host_port,
        default=DEFAULT_METRICS_ADDR,
        help="Prometheus HTTP address; 'off' disables",
    )
    add_env_argument(
        parser,
        "--max-batch",
        type=positive_int,
        default=DEFAULT_MAX_BATCH,
        help="most blinded elements per Evaluate request",
    )
    add_env_argument(
        parser,
        "--workers",
        type=non_negative_int,
        default=0,
        help="evaluation processes; 0 = one per core",
    )
    add_env_argument(
        parser,
        "--drain-seconds",
        type=positive_seconds,
        default=20.0,
        help="grace for in-flight calls after SIGTERM",
    )
    add_log_arguments(parser)
    tracing.add_arguments(parser)
    add_env_argument(
        parser,
        "--cache-dir",
        type=Path,
        help="where filter bodies are cached while served (default: system temp)",
    )


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> MatcherConfig:
    """Build the config, reporting a missing required path as a usage error."""
    for name in _REQUIRED_PATHS:
        if getattr(args, name) is None:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} is required (or its environment variable, see --help)")
    return MatcherConfig(
        tls_dir=args.tls_dir,
        oprf_key_dir=args.oprf_key_dir,
        verify_key=args.verify_key,
        notifier_statement=args.notifier_statement,
        nats_url=args.nats_url,
        nats_tls_dir=args.nats_tls_dir,
        connect_timeout=args.connect_timeout,
        tenants_file=args.tenants_file,
        grpc_addr=args.grpc_addr,
        health_addr=args.health_addr,
        metrics_addr=args.metrics_addr,
        max_batch=args.max_batch,
        workers=args.workers,
        drain_seconds=args.drain_seconds,
        cache_dir=args.cache_dir,
    )
