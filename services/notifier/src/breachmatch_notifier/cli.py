"""``breachmatch-notifier``: run the notifier.

``serve``
    Outreach intake (mTLS gRPC), status queries and watches, plus
    ``--workers-per-process`` delivery workers and the new-breach alerter.
``worker``
    Delivery workers and the alerter only, no gRPC API: start more of these to
    deliver faster; they share the work queue with every ``serve`` process.

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
from breachmatch import logs
from breachmatch.pipes import quiet_on_closed_pipe
from breachmatch.reachability import EXIT_UNREACHABLE, UnreachableError
from breachmatch.settings import add_version_argument
from breachmatch.tenants import TenantConfigError
from breachmatch_notifier import config as settings
from breachmatch_notifier.app import NotifierApp
from breachmatch_notifier.channels import ChannelConfigError, ChannelsConfig
from breachmatch_notifier.notice import TemplateValidationError

log = logs.get_logger(__name__)

#: Exit status of a configuration the notifier refuses to run with.
CONFIG_ERROR = 2


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
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure_logging("notifier", level=args.log_level, fmt=args.log_format)
    try:
        channels = ChannelsConfig.from_env()
    except ChannelConfigError as exc:
        log.error("refusing to start: channel configuration", problem=str(exc))
        return CONFIG_ERROR
    config = settings.config_from_args(args.subparser, args, channels)
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


if __name__ == "__main__":
    sys.exit(main())
