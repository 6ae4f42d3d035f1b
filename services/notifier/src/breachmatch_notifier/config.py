"""Configuration of `breachmatch-notifier serve` and `worker`: flags, environment, defaults.

Every flag has an environment fallback (`breachmatch.settings`). The
listening addresses use the plain names the deployment's ConfigMap sets for
this service (``BREACHMATCH_GRPC_ADDR``); knobs only the notifier has are
prefixed ``BREACHMATCH_NOTIFIER_``. Channels (SMTP, SMS gateway, Digital Post,
dry run, rate limits) are read by `ChannelsConfig.from_env` and have no flags:
their passwords and tokens must not appear on a command line.

=======================  ==========================================  ======================
flag                     environment                                 default
=======================  ==========================================  ======================
--nats-url               BREACHMATCH_NATS_URL                        tls://127.0.0.1:4222
--nats-tls-dir           BREACHMATCH_NATS_TLS_DIR                    --tls-dir (required for worker)
--connect-timeout        BREACHMATCH_CONNECT_TIMEOUT                 30 s, then exit 69
--notifier-secret-key    BREACHMATCH_NOTIFIER_SECRET_KEY             (required) X25519, hex
--tenants-file           BREACHMATCH_TENANTS_FILE                    (required)
--tls-dir                BREACHMATCH_TLS_DIR                         (required for serve)
--verify-key             BREACHMATCH_VERIFY_KEY                      (required) operator Ed25519
--grpc-addr              BREACHMATCH_GRPC_ADDR                       0.0.0.0:50061 (mTLS)
--health-addr            BREACHMATCH_HEALTH_ADDR                     0.0.0.0:50062 ("off" disables)
--metrics-addr           BREACHMATCH_METRICS_ADDR                    0.0.0.0:9102 ("off" disables)
--workers-per-process    BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS    32 (serve: 0 = intake only)
--max-deliver            BREACHMATCH_NOTIFIER_MAX_DELIVER            5 attempts per notice
--ack-wait               BREACHMATCH_NOTIFIER_ACK_WAIT               30 s
--backoff                BREACHMATCH_NOTIFIER_BACKOFF                5,30,120,600 s
--max-batch              BREACHMATCH_NOTIFIER_MAX_BATCH              500 items per request
--drain-seconds          BREACHMATCH_NOTIFIER_DRAIN_SECONDS          20 s
--cache-dir              BREACHMATCH_CACHE_DIR                       system temp dir
--template-dir           BREACHMATCH_NOTIFIER_TEMPLATE_DIR           the packaged templates
--fallback-language      BREACHMATCH_NOTIFIER_FALLBACK_LANGUAGE      da
--log-format             BREACHMATCH_LOG_FORMAT                      auto
--log-level              BREACHMATCH_LOG_LEVEL                       INFO
=======================  ==========================================  ======================
"""

from __future__ import annotations

import argparse
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
from breachmatch_notifier.channels import ChannelsConfig
from breachmatch_notifier.notice import DEFAULT_LANGUAGE

#: A service listens on every interface; the network policies decide who reaches it.
DEFAULT_GRPC_ADDR = "0.0.0.0:50061"
DEFAULT_HEALTH_ADDR = "0.0.0.0:50062"
DEFAULT_METRICS_ADDR = "0.0.0.0:9102"
DEFAULT_BACKOFF = (5.0, 30.0, 120.0, 600.0)
DEFAULT_MAX_BATCH = 500
#: Deliveries in flight per process: they wait on the ledger and the SMTP server
#: far more than on the CPU, so many overlap (SMTP sessions are capped apart).
DEFAULT_WORKERS = 32
#: A sealed `ContactDetails` is a few hundred bytes; this leaves room for long
#: postal addresses and still bounds what one request can make us hold.
MAX_SEALED_CONTACT_BYTES = 8 * 1024
_MESSAGE_HEADROOM = 64 * 1024


@dataclass(frozen=True)
class NotifierConfig:
    notifier_secret_key: Path
    tenants_file: Path
    channels: ChannelsConfig
    #: The operator's key: breach publications and retractions are used only if it signed them.
    verify_key: Path
    tls_dir: Path | None = None
    nats_url: str = DEFAULT_NATS_URL
    #: NATS client certificate; None: the gRPC one (`tls_dir`), the notifier's service identity.
    nats_tls_dir: Path | None = None
    #: Seconds start-up keeps trying to reach NATS before it gives up.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    grpc_addr: str = DEFAULT_GRPC_ADDR
    health_addr: str | None = DEFAULT_HEALTH_ADDR
    metrics_addr: str | None = DEFAULT_METRICS_ADDR
    #: Concurrent deliveries; 0 makes a `serve` process intake only (no workers, no alerts).
    workers_per_process: int = DEFAULT_WORKERS
    max_deliver: int = 5
    ack_wait: float = 30.0
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    max_batch: int = DEFAULT_MAX_BATCH
    drain_seconds: float = 20.0
    #: Where breach bodies and proof indexes are kept while proofs are checked.
    cache_dir: Path | None = None
    template_dir: Path | None = None
    fallback_language: str = DEFAULT_LANGUAGE
    #: How long start-up may take to replay stream BREACHES before giving up.
    replay_timeout: float = 60.0

    def nats_tls(self) -> TlsFiles:
        return nats_tls(self.nats_tls_dir, self.tls_dir)

    def server_config(self) -> ServerConfig:
        """The shared runtime's settings; messages are capped just above a full batch."""
        if self.tls_dir is None:
            raise ValueError("tls_dir: required to serve gRPC")
        return ServerConfig(
            grpc_addr=self.grpc_addr,
            tls_dir=self.tls_dir,
            health_addr=self.health_addr,
            metrics_addr=self.metrics_addr,
            max_message_bytes=self.max_batch * (MAX_SEALED_CONTACT_BYTES + 1024)
            + _MESSAGE_HEADROOM,
            drain_seconds=self.drain_seconds,
        )

    @property
    def claim_lease(self) -> float:
        """How long a worker's claim on a ledger entry stands without a word from it.

        Two ``ack_wait``: JetStream redelivers a request after one, so a live
        holder cut off from NATS for less than that keeps its claim and
        records its own outcome (`breachmatch_notifier.claims`).
        """
        return 2 * self.ack_wait

    def retry_delay(self, delivered: int) -> float:
        """Seconds before attempt ``delivered + 1``, after ``delivered`` attempts failed."""
        return self.backoff[min(delivered, len(self.backoff)) - 1]


def _backoff(text: str) -> tuple[float, ...]:
    try:
        delays = tuple(positive_seconds(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError("must be comma-separated seconds, e.g. 5,30,120") from None
    if not delays:
        raise argparse.ArgumentTypeError("needs at least one delay")
    return delays


def add_arguments(parser: argparse.ArgumentParser, *, serve: bool) -> None:
    """Flags of one subcommand; ``serve`` adds the gRPC ones."""
    add_nats_arguments(parser)
    add_env_argument(
        parser,
        "--notifier-secret-key",
        type=Path,
        help="X25519 secret key file that opens sealed contact details",
    )
    add_env_argument(
        parser, "--tenants-file", type=Path, help="tenants JSON (sender identity, alert e-mail)"
    )
    add_env_argument(
        parser,
        "--verify-key",
        type=Path,
        help="operator Ed25519 verify key file (publications and retractions must verify)",
    )
    if serve:
        add_env_argument(
            parser, "--tls-dir", type=Path, help="server TLS directory (ca.crt, tls.crt, tls.key)"
        )
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
        "--workers-per-process",
        env="BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS",
        type=non_negative_int,
        default=DEFAULT_WORKERS,
        help="notices delivered at once by this process; 0 with serve: intake only",
    )
    add_env_argument(
        parser,
        "--max-deliver",
        env="BREACHMATCH_NOTIFIER_MAX_DELIVER",
        type=positive_int,
        default=5,
        help="delivery attempts per notice before it is dead-lettered",
    )
    add_env_argument(
        parser,
        "--ack-wait",
        env="BREACHMATCH_NOTIFIER_ACK_WAIT",
        type=positive_seconds,
        default=30.0,
        help="seconds without a sign of life before a crashed worker's notice is redelivered",
    )
    add_env_argument(
        parser,
        "--backoff",
        env="BREACHMATCH_NOTIFIER_BACKOFF",
        type=_backoff,
        default=DEFAULT_BACKOFF,
        help="seconds to wait before each retry after a transient failure, comma-separated",
    )
    add_env_argument(
        parser,
        "--max-batch",
        env="BREACHMATCH_NOTIFIER_MAX_BATCH",
        type=positive_int,
        default=DEFAULT_MAX_BATCH,
        help="most items per SubmitOutreach request",
    )
    add_env_argument(
        parser,
        "--drain-seconds",
        env="BREACHMATCH_NOTIFIER_DRAIN_SECONDS",
        type=positive_seconds,
        default=20.0,
        help="grace for in-flight calls and sends after SIGTERM",
    )
    add_env_argument(
        parser,
        "--cache-dir",
        type=Path,
        help="where breach bodies and proof indexes are kept to check proofs (default: temp)",
    )
    add_env_argument(
        parser,
        "--template-dir",
        env="BREACHMATCH_NOTIFIER_TEMPLATE_DIR",
        type=Path,
        help="notice templates (default: the packaged da/en set)",
    )
    add_env_argument(
        parser,
        "--fallback-language",
        env="BREACHMATCH_NOTIFIER_FALLBACK_LANGUAGE",
        default=DEFAULT_LANGUAGE,
        help="language of notices whose recipient's language has no templates",
    )
    add_log_arguments(parser)
    tracing.add_arguments(parser)


def config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, channels: ChannelsConfig
) -> NotifierConfig:
    """Build the config, reporting a missing required path as a usage error."""
    serve = hasattr(args, "tls_dir")
    required = ["notifier_secret_key", "tenants_file", "verify_key"]
    if serve:
        required.append("tls_dir")
    elif args.workers_per_process == 0:
        parser.error("--workers-per-process must be at least 1 for a worker")
    elif args.nats_tls_dir is None:
        parser.error("--nats-tls-dir is required for a worker (or BREACHMATCH_NATS_TLS_DIR)")
    for name in required:
        if getattr(args, name) is None:
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} is required (or its environment variable, see --help)")
    return NotifierConfig(
        notifier_secret_key=args.notifier_secret_key,
        tenants_file=args.tenants_file,
        channels=channels,
        tls_dir=getattr(args, "tls_dir", None),
        nats_url=args.nats_url,
        nats_tls_dir=args.nats_tls_dir,
        connect_timeout=args.connect_timeout,
        verify_key=args.verify_key,
        grpc_addr=getattr(args, "grpc_addr", DEFAULT_GRPC_ADDR),
        health_addr=args.health_addr,
        metrics_addr=args.metrics_addr,
        workers_per_process=args.workers_per_process,
        max_deliver=args.max_deliver,
        ack_wait=args.ack_wait,
        backoff=args.backoff,
        max_batch=args.max_batch,
        drain_seconds=args.drain_seconds,
        cache_dir=args.cache_dir,
        template_dir=args.template_dir,
        fallback_language=args.fallback_language,
    )
