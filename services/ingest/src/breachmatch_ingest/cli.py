"""``breachmatch-ingest``: turn a leak dump into a published, signed breach filter.

    breachmatch-ingest FILE --breach-id ID --title T [...]    same as `ingest`
    breachmatch-ingest ingest FILE ...        coordinate one dump (+ a local worker)
    breachmatch-ingest worker                 evaluate queued chunks until stopped
    breachmatch-ingest serve                  gRPC Ingest service + a worker
    breachmatch-ingest retract ID --reason R  withdraw a published breach

Every flag can also come from ``BREACHMATCH_<FLAG>`` (see ``--help``). Exit
codes: 0 done, 1 the job failed, 2 bad configuration or input, 69 NATS could
not be reached within ``--connect-timeout`` (or, mid-job, stayed away longer than
``--stall-timeout``: the job is left to resume), 70 an internal error (a bug: one
line naming where, the traceback only with ``--debug``), 130 interrupted, 141
stdout's reader went away. Re-running an interrupted ``ingest`` with the same
arguments resumes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Never, TypeVar

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from tqdm import tqdm

import breachmatch.quiet_grpc_core  # noqa: F401 (sets GRPC_VERBOSITY before gRPC loads)
from breachmatch import bus, logs, tracing
from breachmatch.columns import ColumnMapping, MappingError
from breachmatch.filter import RetractionFormatError
from breachmatch.filter.breach_ids import BREACH_ID_RULE, is_breach_id, shown
from breachmatch.keys import KeyRing, KeyRingError, load_signing_key
from breachmatch.pipes import quiet_on_closed_pipe
from breachmatch.reachability import EXIT_UNREACHABLE, UnreachableError
from breachmatch.readers import ReaderError, inspect
from breachmatch.server import ServerConfig, Service, watch_nats_health
from breachmatch.settings import add_env_argument, add_version_argument, host_port
from breachmatch.v1 import ingest_pb2_grpc
from breachmatch_ingest import config
from breachmatch_ingest.coordinator import Coordinator
from breachmatch_ingest.errors import ConfigError, IngestError, describe
from breachmatch_ingest.jobs import DumpIdentity, JobStore, digest_file
from breachmatch_ingest.metadata import MetadataError
from breachmatch_ingest.pipeline import read_dump
from breachmatch_ingest.probes import Probes
from breachmatch_ingest.publish import (
    BreachRetractedError,
    PublishContentionError,
    UnknownBreachError,
    retract_breach,
)
from breachmatch_ingest.servicer import SERVICE_NAME, IngestServicer
from breachmatch_ingest.worker import ChunkWorker, WorkerSettings, pool_for

log = logs.get_logger(__name__)

SUBCOMMANDS = ("ingest", "worker", "serve", "retract")
_CLIENT_NAME = "breachmatch-ingest"
_T = TypeVar("_T")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breachmatch-ingest",
        description="Turn a leak dump into a signed breach filter and publish it.",
    )
    add_version_argument(parser, "breachmatch-ingest")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="ingest one dump (the default command)")
    config.add_dump(ingest)
    config.add_breach(ingest)
    config.add_keys(ingest, signing=True)
    config.add_coordinator(ingest)
    config.add_worker(ingest, default_workers=None)
    config.add_probes(ingest, health=None, metrics=None)
    config.add_common(ingest)

    worker = commands.add_parser("worker", help="evaluate queued chunks until stopped")
    config.add_keys(worker, signing=False)
    config.add_worker(worker, default_workers=None)
    config.add_probes(worker, health=None, metrics=None)
    config.add_common(worker)

    serve = commands.add_parser("serve", help="run the gRPC Ingest service and a worker")
    add_env_argument(
        serve, "--grpc-addr", type=host_port, default="0.0.0.0:50071", help="mTLS gRPC address"
    )
    add_env_argument(serve, "--tls-dir", type=Path, help="ca.crt, tls.crt, tls.key (required)")
    config.add_keys(serve, signing=True)
    config.add_coordinator(serve)
    config.add_worker(serve, default_workers=None)
    config.add_probes(serve, health="0.0.0.0:50072", metrics="0.0.0.0:9103")
    config.add_common(serve)

    retract = commands.add_parser("retract", help="withdraw a published breach (signed)")
    retract.add_argument("breach_id", help="the breach to withdraw")
    add_env_argument(retract, "--reason", default="", help="why (required; shown to hospitals)")
    config.add_signing_key(retract)
    config.add_common(retract)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; a dump path with no command means ``ingest``, the common case."""
    args_list = list(argv)
    if args_list and args_list[0] not in (*SUBCOMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "ingest")
    return build_parser().parse_args(args_list)


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logs.configure_logging("ingest", args.log_level, args.log_format)
    tracing.configure("ingest", args)
    handler = {"ingest": _ingest, "worker": _worker, "serve": _serve, "retract": _retract}
    try:
        with contextlib.ExitStack() as stack:
            # The pool is forked before the event loop starts (see `pool_for`).
            slots = _local_worker_slots(args)
            pool = stack.enter_context(pool_for(slots)) if slots else None
            return asyncio.run(handler[args.command](args, pool))
    except (
        ConfigError,
        MetadataError,
        MappingError,
        ReaderError,
        KeyRingError,
        RetractionFormatError,
    ) as error:
        print(f"breachmatch-ingest: {describe(error)}", file=sys.stderr)
        return EXIT_USAGE
    except UnreachableError as error:
        print(f"breachmatch-ingest: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokenPipeError:
        raise  # stdout's reader left: `quiet_on_closed_pipe` ends the command quietly
    except OSError as error:
        if error.filename is None:  # not a file: report it like any other failure
            print(f"breachmatch-ingest: {describe(error)}", file=sys.stderr)
            return EXIT_FAILED
        # The dump, a key or the mapping file cannot be read: its path is the operator's.
        print(f"breachmatch-ingest: {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except (
        IngestError,
        BreachRetractedError,
        UnknownBreachError,
        PublishContentionError,
    ) as error:
        print(f"breachmatch-ingest: {describe(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("breachmatch-ingest: interrupted; run again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a traceback could quote dump content: describe it instead
        print(
            f"breachmatch-ingest: internal error: {describe(error)} "
            "(a bug; --debug prints the traceback)",
            file=sys.stderr,
        )
        if args.debug:
            print(logs.scrubbed_traceback(error), file=sys.stderr)
        return EXIT_INTERNAL


def _local_worker_slots(args: argparse.Namespace) -> int:
    """OPRF processes this command runs itself (0 for retract and --inspect)."""
    if args.command == "retract" or getattr(args, "inspect", False):
        return 0
    return config.worker_settings(args).slots


async def _connect(args: argparse.Namespace, role: str) -> tuple[NatsClient, JetStreamContext]:
    """Join NATS as the ingest service and create what ingest owns.

    Every command does the creating, whichever runs first in a cluster (the
    worker Deployment, a one-dump Job, serve): the matcher and the notifier
    wait for stream BREACHES and the filter store, and may not create them.
    """
    nc, js = await bus.connect(
        args.nats_url,
        _CLIENT_NAME + role,
        config.nats_client_tls(args),
        give_up_after=args.connect_timeout,
    )
    await bus.ensure_owned(js, "ingest")
    return nc, js


# --- ingest --------------------------------------------------------------------


async def _ingest(args: argparse.Namespace, pool: Executor | None) -> int:
    mapping = ColumnMapping.load(args.map) if args.map else None
    encoding: str | None = args.encoding  # a canonical codec name (`text_encoding`)
    if args.inspect:
        return await _inspect(args, mapping, encoding)
    info = config.checked_breach_info(args)
    coordinator_settings = config.coordinator_settings(args)
    worker_settings = config.worker_settings(args)
    key = KeyRing.load(config.required_path(args, "oprf_key_dir")).current
    signing_key = load_signing_key(config.required_path(args, "signing_key"))
    dump_sha256, dump_size = await asyncio.to_thread(digest_file, args.file)
    identity = DumpIdentity(
        breach_id=info.breach_id,
        dump_sha256=dump_sha256,
        dump_size=dump_size,
        key_id=key.key_id,
        format=args.format,
        mapping_sha256=hashlib.sha256(args.map.read_bytes()).hexdigest() if args.map else "",
        chunk_pairs=coordinator_settings.chunk_pairs,
        encoding=encoding or "",
    )
    nc, js = await _connect(args, "")
    probes = Probes(args.health_addr, args.metrics_addr)
    await probes.start()
    try:
        coordinator = Coordinator(js, await JobStore.open(js), signing_key, coordinator_settings)
        start = await coordinator.begin(identity.job_id(), info, key)
        if start.resumed:
            log.info("resuming job", chunks_enqueued=start.record.chunks_enqueued)
        with _progress_bar(dump_size) as bar:

            def progress(done: int) -> None:
                bar.update(done - bar.n)

            outcome = await _alongside_worker(
                js,
                worker_settings,
                pool,
                coordinator.run(
                    start,
                    info,
                    key,
                    lambda: read_dump(args.file, args.format, mapping, progress, encoding),
                ),
            )
    finally:
        await probes.stop()
        await nc.close()
    report = outcome.record.report
    print(report.render_text())
    publication = outcome.publication
    print(
        f"job {outcome.record.job_id}: {publication.outcome.value} (version {publication.version})"
    )
    if args.json_report:
        document = report.to_dict() | {
            "job_id": outcome.record.job_id,
            "breach_id": info.breach_id,
            "publication": publication.outcome.value,
            "version": publication.version,
            "body_sha256": outcome.record.body_sha256,
        }
        args.json_report.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


async def _inspect(
    args: argparse.Namespace, mapping: ColumnMapping | None, encoding: str | None
) -> int:
    """Sample the dump and show what a run would do; touches no NATS at all."""
    report = await asyncio.to_thread(inspect, args.file, args.format, mapping, encoding=encoding)
    print(report.render())
    if args.json_report:
        args.json_report.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return 0


def _progress_bar(total: int) -> tqdm[Never]:
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="reading dump",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )


async def _alongside_worker(
    js: JetStreamContext, settings: WorkerSettings, pool: Executor | None, main: Awaitable[_T]
) -> _T:
    """Await `main` with a local worker on `pool` beside it (none without a pool).

    If the worker dies, `main` is cancelled (a job is left RUNNING, to be
    resumed) and the worker's error is raised.
    """
    main_task = asyncio.ensure_future(main)
    if pool is None:
        return await main_task
    stop = asyncio.Event()
    worker_task = asyncio.create_task(ChunkWorker(js, settings, pool).run(stop))
    try:
        await asyncio.wait({main_task, worker_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        main_task.cancel()  # a no-op once it is done
        await asyncio.gather(main_task, worker_task, return_exceptions=True)
    if main_task.cancelled() and not worker_task.cancelled():
        worker_task.result()  # the worker's failure is why `main` was stopped
    return main_task.result()


# --- worker, serve, retract ---------------------------------------------------------


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run until SIGTERM/SIGINT, then let `run` finish what it holds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def _worker(args: argparse.Namespace, pool: Executor | None) -> int:
    if pool is None:
        raise ConfigError("a worker needs --workers >= 1")
    settings = config.worker_settings(args)
    nc, js = await _connect(args, "-worker")
    probes = Probes(args.health_addr, args.metrics_addr)
    await probes.start()
    try:
        await _until_signalled(ChunkWorker(js, settings, pool).run)
    finally:
        await probes.stop()
        await nc.close()
    return 0


async def _serve(args: argparse.Namespace, pool: Executor | None) -> int:
    worker_settings = config.worker_settings(args)
    key_dir = config.required_path(args, "oprf_key_dir")
    signing_key = load_signing_key(config.required_path(args, "signing_key"))
    service = Service(
        "ingest",
        ServerConfig(
            grpc_addr=args.grpc_addr,
            tls_dir=config.required_path(args, "tls_dir"),
            health_addr=args.health_addr,
            metrics_addr=args.metrics_addr,
        ),
    )
    nc, js = await _connect(args, "-serve")
    jobs = await JobStore.open(js)
    coordinator = Coordinator(js, jobs, signing_key, config.coordinator_settings(args))
    servicer = IngestServicer(js, jobs, coordinator, key_dir, signing_key)
    ingest_pb2_grpc.add_IngestServicer_to_server(servicer, service.server)
    await service.start([SERVICE_NAME])
    service.install_signal_handlers()
    health = asyncio.create_task(watch_nats_health(service, lambda: nc.is_connected))
    try:
        await _alongside_worker(js, worker_settings, pool, service.wait_for_stop())
    finally:
        await service.drain()
        await servicer.stop()
        await health
        await nc.close()
    return 0


async def _retract(args: argparse.Namespace, pool: Executor | None) -> int:
    if not args.reason.strip():
        raise ConfigError("--reason is required")
    if not is_breach_id(args.breach_id):
        raise ConfigError(f"{shown(args.breach_id)} is not a breach id ({BREACH_ID_RULE})")
    signing_key = load_signing_key(config.required_path(args, "signing_key"))
    nc, js = await _connect(args, "-retract")
    try:
        outcome = await retract_breach(js, args.breach_id, args.reason, signing_key)
    finally:
        await nc.close()
    print(f"breach {args.breach_id}: {outcome.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
