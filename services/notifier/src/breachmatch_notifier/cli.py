"""``breachmatch-notifier``: run the notifier.

``serve``
    Outreach intake (mTLS gRPC), status queries and watches, plus
    ``--workers-per-process`` delivery workers and the new-breach alerter.
``worker``
    Delivery workers and the alerter only, no gRPC API: start more of these to
    deliver faster; they share the work queue with every ``serve`` process.
``held`` / ``resolve MESSAGE-ID --sent|--not-sent``
    Notices held for review because their outcome is unknown, and the
    operator's record of what the SMTP relay's log says about one
    (`breachmatch_notifier.review`).

Flags and their ``BREACHMATCH_*`` variables are listed in
`breachmatch_notifier.config`; channels come from the environment
(`ChannelsConfig.from_env`). A configuration that cannot work — a template
lacking a required element, no usable channel, a missing key or tenants file
— is reported and the process exits with status 2 before it connects anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import breachmatch.quiet_grpc_core  # noqa: F401 (sets GRPC_VERBOSITY before gRPC loads)
from breachmatch import bus, logs, tracing
from breachmatch.pipes import quiet_on_closed_pipe
from breachmatch.reachability import EXIT_UNREACHABLE, UnreachableError
from breachmatch.settings import add_nats_arguments, add_version_argument, nats_tls
from breachmatch.tenants import TenantConfigError
from breachmatch_notifier import config as settings
from breachmatch_notifier import review
from breachmatch_notifier.app import CLIENT_NAME, NotifierApp
from breachmatch_notifier.channels import ChannelConfigError, ChannelsConfig
from breachmatch_notifier.ledger import Ledger, LedgerConflictError
from breachmatch_notifier.notice import TemplateValidationError

log = logs.get_logger(__name__)

#: Exit status of a configuration the notifier refuses to run with.
CONFIG_ERROR = 2
#: Exit status of a review command that could not be carried out.
REVIEW_FAILED = 1
_REVIEW_COMMANDS = ("held", "resolve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breachmatch-notifier",
        description="breachmatch notifier: one clear notice per affected patient",
    )
    add_version_argument(parser, "breachmatch-notifier")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="outreach intake (gRPC) and delivery workers")
    settings.add_arguments(serve, serve=True)
    serve.set_defaults(subparser=serve)
    worker = commands.add_parser("worker", help="delivery workers only, no gRPC")
    settings.add_arguments(worker, serve=False)
    worker.set_defaults(subparser=worker)
    held = _review_parser(commands, "held", "list notices held for review (outcome unknown)")
    held.set_defaults(subparser=held)
    resolve = _review_parser(
        commands, "resolve", "record what the relay's log says about a held notice"
    )
    resolve.add_argument("message_id", help="the held notice's Message-ID, <...@...>")
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--sent", action="store_true", help="the relay took it")
    outcome.add_argument("--not-sent", action="store_true", help="the relay has no such message")
    resolve.set_defaults(subparser=resolve)
    return parser


def _review_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=text)
    add_nats_arguments(parser)  # the notifier's own certificate: only it may read the ledger
    parser.set_defaults(log_level="WARNING", log_format="auto")
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure_logging("notifier", level=args.log_level, fmt=args.log_format)
    if args.command in _REVIEW_COMMANDS:
        return asyncio.run(_review(args))
    try:
        channels = ChannelsConfig.from_env()
    except ChannelConfigError as exc:
        log.error("refusing to start: channel configuration", problem=str(exc))
        return CONFIG_ERROR
    config = settings.config_from_args(args.subparser, args, channels)
    tracing.configure("notifier", args)
    return asyncio.run(_run(config, intake=args.command == "serve"))


async def _run(config: settings.NotifierConfig, *, intake: bool) -> int:
    # Built inside the loop: the gRPC server belongs to the loop it is created in.
    app = NotifierApp(config, intake=intake)
    try:
        await app.start()
    except UnreachableError as exc:
        log.error("giving up: NATS cannot be reached", problem=str(exc))
        return EXIT_UNREACHABLE
    except TemplateValidationError as exc:
        log.error("refusing to start: templates", template=exc.template, problem=exc.problem)
        return CONFIG_ERROR
    except (ChannelConfigError, TenantConfigError, OSError, ValueError) as exc:
        log.error("refusing to start: configuration", problem=f"{type(exc).__name__}: {exc}")
        return CONFIG_ERROR
    return await app.run()


async def _review(args: argparse.Namespace) -> int:
    try:
        tls = nats_tls(args.nats_tls_dir)
    except (ValueError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return CONFIG_ERROR
    try:
        nc, js = await bus.connect(args.nats_url, CLIENT_NAME, tls)
    except UnreachableError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        # Reading and settling entries computes no patient references: no key needed.
        ledger = Ledger(await bus.key_value(js, bus.KV_OUTREACH_LEDGER), ref_key=b"")
        if args.command == "held":
            found = await review.held(ledger)
            for versioned in found:
                print(review.describe(versioned))
            print(f"{len(found)} held", file=sys.stderr)
            return 0
        settled = await review.resolve(ledger, args.message_id, sent=args.sent)
        print(f"{settled.entry.state}: {review.describe(settled)}")
        return 0
    except review.ReviewError as exc:
        print(str(exc), file=sys.stderr)
        return REVIEW_FAILED
    except LedgerConflictError:
        print("the notice changed meanwhile; run `held` again", file=sys.stderr)
        return REVIEW_FAILED
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(main())
