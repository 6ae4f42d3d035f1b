"""Every flag of ``breachmatch-ingest``, each with its ``BREACHMATCH_*`` variable.

Flags are grouped by what they configure, and each subcommand takes the
groups it needs, so ``--help`` of ``worker`` does not list breach metadata
and a sourced stack env configures all subcommands at once. The builders
turn parsed flags into the settings objects the modules take, so nothing
below the CLI ever reads the environment.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from breachmatch import tracing
from breachmatch.notice_rules import NOTICE_LANGUAGES
from breachmatch.readers import FORMATS
from breachmatch.settings import (
    add_env_argument,
    add_log_arguments,
    add_nats_arguments,
    nats_tls,
    non_negative_int,
    optional_host_port,
    positive_int,
    positive_seconds,
    text_encoding,
)
from breachmatch.tls import TlsFiles
from breachmatch_ingest.coordinator import CoordinatorSettings
from breachmatch_ingest.errors import ConfigError
from breachmatch_ingest.metadata import BreachInfo, MetadataError, parse_date
from breachmatch_ingest.pipeline import DEFAULT_CHUNK_PAIRS
from breachmatch_ingest.worker import WorkerSettings


def add_common(parser: argparse.ArgumentParser) -> None:
    add_nats_arguments(parser)
    add_log_arguments(parser)
    tracing.add_arguments(parser)
    add_env_argument(
        parser,
        "--debug",
        action="store_true",
        default=False,
        help="print the traceback of an unexpected error (it may quote dump content)",
    )


def add_keys(parser: argparse.ArgumentParser, *, signing: bool) -> None:
    add_env_argument(
        parser, "--oprf-key-dir", type=Path, help="directory of the OPRF key ring (required)"
    )
    if signing:
        add_signing_key(parser)


def add_signing_key(parser: argparse.ArgumentParser) -> None:
    add_env_argument(
        parser,
        "--signing-key",
        type=Path,
        help="operator Ed25519 key signing manifests and retractions (required)",
    )


def add_worker(parser: argparse.ArgumentParser, *, default_workers: int | None) -> None:
    add_env_argument(
        parser,
        "--workers",
        type=non_negative_int,
        default=default_workers if default_workers is not None else os.cpu_count() or 1,
        help="OPRF processes of the local worker (0: none, leave chunks to other workers)",
    )
    add_env_argument(
        parser,
        "--ack-wait",
        type=positive_seconds,
        default=30.0,
        help="seconds before an unacknowledged chunk goes to another worker",
    )
    add_env_argument(
        parser,
        "--max-deliver",
        type=positive_int,
        default=5,
        help="deliveries of one chunk before it is given up (the job then stalls)",
    )


def add_probes(parser: argparse.ArgumentParser, health: str | None, metrics: str | None) -> None:
    add_env_argument(
        parser,
        "--health-addr",
        type=optional_host_port,
        default=health,
        help="plaintext gRPC health address; 'off' disables",
    )
    add_env_argument(
        parser,
        "--metrics-addr",
        type=optional_host_port,
        default=metrics,
        help="Prometheus metrics address; 'off' disables",
    )


def add_coordinator(parser: argparse.ArgumentParser) -> None:
    add_env_argument(
        parser,
        "--chunk-pairs",
        type=positive_int,
        default=DEFAULT_CHUNK_PAIRS,
        help="(OPRF input, label) pairs per work-queue chunk",
    )
    add_env_argument(
        parser,
        "--stall-timeout",
        type=positive_seconds,
        default=600.0,
        help="fail a job when no chunk result arrives, or NATS stays away, this many seconds",
    )


def add_dump(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the dump (plain, .gz, .bz2, .xz or .zip)")
    add_env_argument(parser, "--format", default="auto", choices=FORMATS, help="dump format")
    add_env_argument(
        parser,
        "--encoding",
        type=text_encoding,
        help="text encoding of the dump (default: sniffed from its bytes)",
    )
    add_env_argument(parser, "--map", type=Path, help="column mapping file (JSON)")
    add_env_argument(
        parser,
        "--inspect",
        action="store_true",
        default=False,
        help="show the chosen format, mapping and counts on a sample; write nothing",
    )
    add_env_argument(parser, "--json-report", type=Path, help="also write the report as JSON")


def add_breach(parser: argparse.ArgumentParser) -> None:
    add_env_argument(parser, "--breach-id", help="breach id (required)")
    add_env_argument(parser, "--title", default="", help="breach title (required)")
    add_env_argument(
        parser,
        "--organisation",
        default="",
        help="breached organisation (required: notices name it)",
    )
    add_env_argument(parser, "--breach-date", help="ISO date of the breach (default: today)")
    for language in NOTICE_LANGUAGES:
        add_env_argument(
            parser,
            f"--description-{language}",
            default="",
            help=f"what happened, in '{language}', quoted in patients' notices "
            f"(give every --description-* or none)",
        )
    add_env_argument(
        parser, "--verified", action="store_true", default=False, help="the breach is verified"
    )
    add_env_argument(
        parser,
        "--sensitive",
        action="store_true",
        default=False,
        help="the breach is sensitive (health data)",
    )


def required_path(args: argparse.Namespace, name: str) -> Path:
    value: Path | None = getattr(args, name)
    if value is None:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag} (or BREACHMATCH_{name.upper()}) is required")
    return value


def breach_info(args: argparse.Namespace) -> BreachInfo:
    if not args.breach_id:
        raise ConfigError("--breach-id (or BREACHMATCH_BREACH_ID) is required")
    return BreachInfo(
        breach_id=args.breach_id,
        title=args.title,
        organisation=args.organisation,
        breach_date=parse_date(args.breach_date, "--breach-date") if args.breach_date else None,
        descriptions={
            language: getattr(args, f"description_{language}") for language in NOTICE_LANGUAGES
        },
        verified=args.verified,
        sensitive=args.sensitive,
    )


#: The flag that sets each metadata field, for messages that name what to fix.
_METADATA_FLAGS = {
    "title": "--title",
    "organisation": "--organisation",
    **{f"description.{language}": f"--description-{language}" for language in NOTICE_LANGUAGES},
}


def checked_breach_info(args: argparse.Namespace) -> BreachInfo:
    """`breach_info`, checked: a refusal names the flag to fix (``--organisation``)."""
    info = breach_info(args)
    try:
        info.check()
    except MetadataError as error:
        flag = _METADATA_FLAGS.get(error.field)
        if flag is None:
            raise
        raise ConfigError(f"{flag}: {str(error).removeprefix(error.field + ': ')}") from None
    return info


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        oprf_key_dir=required_path(args, "oprf_key_dir"),
        slots=args.workers,
        ack_wait=args.ack_wait,
        max_deliver=args.max_deliver,
    )


def coordinator_settings(args: argparse.Namespace) -> CoordinatorSettings:
    return CoordinatorSettings(chunk_pairs=args.chunk_pairs, stall_timeout=args.stall_timeout)


def nats_client_tls(args: argparse.Namespace) -> TlsFiles:
    """The ingest identity on NATS: ``--nats-tls-dir``, else (``serve``) the gRPC ``--tls-dir``."""
    try:
        return nats_tls(args.nats_tls_dir, getattr(args, "tls_dir", None))
    except ValueError as error:
        raise ConfigError(str(error)) from None
