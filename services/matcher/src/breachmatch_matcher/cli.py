"""``breachmatch-matcher``: ``serve`` the gRPC service, manage ``keys``, admit ``tenants``.

Run ``breachmatch-matcher serve --help`` for every setting and its environment
variable (also tabled in `breachmatch_matcher.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from breachmatch import logs
from breachmatch_matcher.app import MatcherApp
from breachmatch_matcher.config import add_serve_arguments, config_from_args
from breachmatch_matcher.keys_cli import add_keys_arguments, run_keys
from breachmatch_matcher.tenants_cli import add_tenants_arguments, run_tenants


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="breachmatch-matcher",
        description="OPRF evaluation, tenant budgets and breach distribution over gRPC.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_arguments(commands.add_parser("serve", help="run the matcher service"))
    add_keys_arguments(commands.add_parser("keys", help="rotate and inspect OPRF keys"))
    add_tenants_arguments(commands.add_parser("tenants", help="admit a hospital (sign its CSR)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "keys":
        return run_keys(args, sys.stdout, sys.stderr)
    if args.command == "tenants":
        return run_tenants(args, sys.stdout, sys.stderr)
    config = config_from_args(parser, args)
    logs.configure_logging("matcher", level=args.log_level, fmt=args.log_format)

    async def serve() -> int:
        app = MatcherApp(config)  # grpc.aio binds its server to the running loop
        await app.start()
        return await app.run()

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
