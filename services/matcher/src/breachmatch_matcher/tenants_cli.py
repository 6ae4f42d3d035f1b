"""``breachmatch-matcher tenants sign CSR``: admit a hospital in one command.

The hospital made its key and request with ``breachmatch certificate
request``; this checks the request (it may ask for a hospital identity and
nothing else), issues the client certificate from the operator's CA, adds the
tenant to the tenants file (with default budget and no outreach identity yet)
and writes the bundle the hospital installs: certificate, CA and the
operator's manifest verify key (`breachmatch.enrolment`). The printed
fingerprint is what the hospital compares, out of band, with the one its
``certificate install`` prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import TextIO

from breachmatch.certificates import cert_pem
from breachmatch.enrolment import (
    Bundle,
    CertificateAuthority,
    EnrolmentError,
    requested_tenant,
    sign_request,
)
from breachmatch.keys import load_verify_key
from breachmatch.settings import add_env_argument, positive_int
from breachmatch.tenants import TenantConfigError, add_tenant

DEFAULT_DAYS = 365


def add_tenants_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="tenants_action", required=True, metavar="ACTION")
    sign = actions.add_parser("sign", help="issue a hospital certificate and add the tenant")
    sign.add_argument("request", type=Path, help="the hospital's request.csr")
    add_env_argument(sign, "--ca-dir", type=Path, help="the operator's CA: ca.crt and ca.key")
    add_env_argument(
        sign, "--verify-key", type=Path, help="operator Ed25519 verify key file (bundled)"
    )
    add_env_argument(sign, "--tenants-file", type=Path, help="tenants JSON to add the tenant to")
    sign.add_argument(
        "--out", type=Path, help="bundle file to write (default: <tenant>.bundle.json beside it)"
    )
    sign.add_argument(
        "--days",
        type=positive_int,
        default=DEFAULT_DAYS,
        help=f"certificate validity (default {DEFAULT_DAYS}, at most the CA's)",
    )


def run_tenants(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit 0 with the bundle written, 2 for a bad request, CA, key or tenants file."""
    missing = [
        flag for flag in ("ca_dir", "verify_key", "tenants_file") if getattr(args, flag) is None
    ]
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        print(f"breachmatch-matcher tenants sign: {flags} required", file=err)
        return 2
    try:
        request = args.request.read_bytes()
        ca = CertificateAuthority.load(args.ca_dir)
        verify_key = load_verify_key(args.verify_key)
        tenant = requested_tenant(request)
        cert = sign_request(request, ca, validity=dt.timedelta(days=args.days))
        added = add_tenant(args.tenants_file, tenant)
    except (OSError, EnrolmentError, TenantConfigError, ValueError) as error:
        print(f"breachmatch-matcher tenants sign: {error}", file=err)
        return 2
    bundle = Bundle(tenant, cert_pem(cert), cert_pem(ca.cert), bytes(verify_key))
    target = args.out or args.request.with_name(f"{tenant}.bundle.json")
    target.write_text(bundle.to_json() + "\n")
    listed = "added to" if added else "already in"
    print(f"tenant       {tenant} ({listed} {args.tenants_file})", file=out)
    print(f"certificate  valid until {cert.not_valid_after_utc:%Y-%m-%d}", file=out)
    print(f"bundle       {target}", file=out)
    print(f"fingerprint  {bundle.fingerprint()}", file=out)
    print("Send the bundle; read the fingerprint to the hospital by phone.", file=out)
    if added:
        print("Set its organisation and contact point before it sends outreach.", file=out)
    return 0
