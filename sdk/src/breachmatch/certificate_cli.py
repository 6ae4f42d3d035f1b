"""``breachmatch certificate request|install``: the hospital's half of joining.

    breachmatch certificate request --tenant ID [--tls-dir DIR]
    breachmatch certificate install BUNDLE [--tls-dir DIR]

``request`` makes this hospital's private key and a signing request in the TLS
directory (the key never leaves it); the operator signs the request with
``breachmatch-matcher tenants sign`` and sends back a bundle; ``install``
checks the bundle against the key and writes ``ca.crt``, ``tls.crt`` and
``operator.pub`` (for ``--operator-key``) beside it. Both sides print the
bundle's fingerprint: compare them by phone before the first ``check``
(`breachmatch.enrolment`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from breachmatch.enrolment import (
    OPERATOR_KEY_FILE,
    Bundle,
    EnrolmentError,
    install_bundle,
    write_request,
)
from breachmatch.settings import add_env_argument, add_log_arguments

EXIT_PROBLEM = 1


def add_certificate_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="certificate_action", required=True, metavar="ACTION")
    request = actions.add_parser("request", help="make this hospital's key and signing request")
    add_env_argument(
        request, "--tenant", help="this hospital's tenant id, as agreed with the operator"
    )
    install = actions.add_parser("install", help="install the operator's bundle beside the key")
    install.add_argument("bundle", type=Path, help="the bundle file the operator sent")
    for action in (request, install):
        add_env_argument(
            action,
            "--tls-dir",
            type=Path,
            default=Path("tls"),
            help="directory for tls.key, request.csr and later ca.crt, tls.crt",
        )
        add_log_arguments(action, default_level="WARNING")


def run_certificate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.certificate_action == "request":
            return _request(args, out)
        return _install(args, out)
    except (OSError, EnrolmentError) as error:
        print(f"breachmatch: error: {error}", file=err)
        return EXIT_PROBLEM


def _request(args: argparse.Namespace, out: TextIO) -> int:
    if not args.tenant:
        raise EnrolmentError("--tenant is required (the tenant id the operator gave you)")
    path = write_request(args.tenant, args.tls_dir)
    print(f"private key  {args.tls_dir / 'tls.key'} (keep it here; it never leaves)", file=out)
    print(f"request      {path}", file=out)
    print("Send the request to the operator; install the bundle you get back with", file=out)
    print(f"  breachmatch certificate install BUNDLE --tls-dir {args.tls_dir}", file=out)
    return 0


def _install(args: argparse.Namespace, out: TextIO) -> int:
    bundle = Bundle.from_json(args.bundle.read_text())
    identity = install_bundle(bundle, args.tls_dir)
    print(f"installed    {identity} into {args.tls_dir}", file=out)
    print(f"fingerprint  {bundle.fingerprint()}", file=out)
    print(
        "Compare the fingerprint with the operator's (by phone) before the first check;", file=out
    )
    print(
        f"then use --tls-dir {args.tls_dir} --operator-key {args.tls_dir / OPERATOR_KEY_FILE}",
        file=out,
    )
    return 0
