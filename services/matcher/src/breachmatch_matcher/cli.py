"""``breachmatch-matcher``: ``serve`` the gRPC service, manage ``keys``, admit ``tenants``.

Run ``breachmatch-matcher serve --help`` for every setting and its environment
variable (also tabled in `breachmatch_matcher.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import breachmatch.quiet_grpc_core  # noqa: F401 (sets GRPC_VERBOSITY before gRPC loads)
from breachmatch import logs, tracing
from breachmatch.keys import KeyRingError
from breachmatch.pipes import quiet_on_closed_pipe
from breachmatch.reachability import EXIT_UNREACHABLE, UnreachableError
from breachmatch.settings import add_version_argument
from breachmatch.tenants import TenantConfigError
from breachmatch_matcher.app import MatcherApp
from breachmatch_matcher.config import add_serve_arguments, config_from_args
from breachmatch_matcher.keys_cli import add_keys_arguments, run_keys
from breachmatch_matcher.tenants_cli import add_tenants_arguments, run_tenants

log = logs.get_logger(__name__)

#: Exit status of a configuration the matcher refuses to run with (as argparse's usage errors).
CONFIG_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breachmatch-matcher",
        description="OPRF evaluation, tenant budgets and breach distribution over gRPC.",
    )
    add_version_argument(parser, "breachmatch-matcher")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_arguments(commands.add_parser("serve", help="run the matcher service"))
    add_keys_arguments(commands.add_parser("keys", help="rotate and inspect OPRF keys"))
    add_tenants_arguments(commands.add_parser("tenants", help="admit a hospital (sign its CSR)"))
    return parser


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keys":
        return run_keys(args, sys.stdout, sys.stderr)
    if args.command == "tenants":
        return run_tenants(args, sys.stdout, sys.stderr)
    config = config_from_args(parser, args)
    logs.configure_logging("matcher", level=args.log_level, fmt=args.log_format)
    tracing.configure("matcher", args)

    async def serve() -> int:
        app = MatcherApp(config)  # grpc.aio binds its server to the running loop
        try:
            await app.start()
        except UnreachableError as exc:
            log.error("giving up: NATS cannot be reached", problem=str(exc))
            return EXIT_UNREACHABLE
        except (TenantConfigError, KeyRingError, OSError, ValueError) as exc:
            # Every file is read before anything connects: these are the operator's to fix.
            log.error("refusing to start: configuration", problem=f"{type(exc).__name__}: {exc}")
            return CONFIG_ERROR
        return await app.run()

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
