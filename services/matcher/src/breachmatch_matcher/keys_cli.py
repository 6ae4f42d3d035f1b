"""``breachmatch-matcher keys new|list|retire|sign|notifier-statement``: the operator's keys.

Rotation is explicit because every token depends on the key: ``new`` makes a
key current and puts the previous one into its grace period (hospitals
re-tokenise meanwhile), ``retire`` ends a key at once and erases its secret
from disk. Running matchers pick up either change on their next call
(`keyring.LiveKeyRing`).

Hospitals accept a public key only in a statement signed by the operator key
(`breachmatch.statements`), so the commands that make or change a key sign
its statement with ``--signing-key``; ``sign`` re-signs the statements of
every usable key (before they expire, or for a ring older than statements),
and ``notifier-statement`` signs the notifier's sealing key for the matcher
to serve. Output names ids, states and dates only — never a secret.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

import nacl.exceptions

from breachmatch.keys import (
    DEFAULT_STATEMENT_LIFETIME,
    KeyRing,
    KeyRingError,
    OprfKey,
    load_sealing_public_key,
    load_signing_key,
    notifier_statement,
)
from breachmatch.settings import add_env_argument, non_negative_number
from breachmatch.statements import StatementError, format_time

DEFAULT_GRACE_DAYS = 30.0
DEFAULT_STATEMENT_DAYS = DEFAULT_STATEMENT_LIFETIME.days


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_argument(parser, "--oprf-key-dir", type=Path, help="OPRF key ring directory")
    add_env_argument(
        parser, "--signing-key", type=Path, help="operator Ed25519 signing key (signs statements)"
    )
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="make a new current key; the old one enters grace")
    new.add_argument(
        "--grace-days",
        type=non_negative_number,
        default=DEFAULT_GRACE_DAYS,
        help=f"how long the previous key stays valid (default {DEFAULT_GRACE_DAYS:g})",
    )
    _add_statement_days(new)
    actions.add_parser("list", help="key ids, states, validity and statement dates")
    retire = actions.add_parser("retire", help="retire a key now and erase its secret")
    retire.add_argument("key_id")
    sign = actions.add_parser("sign", help="re-sign the statement of every usable key")
    _add_statement_days(sign)
    notifier = actions.add_parser(
        "notifier-statement", help="sign the notifier's public sealing key for the matcher"
    )
    notifier.add_argument("--notifier-public-key", type=Path, required=True)
    notifier.add_argument("--out", type=Path, required=True, help="statement file to write")
    _add_statement_days(notifier)


def _add_statement_days(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--statement-days",
        type=non_negative_number,
        default=DEFAULT_STATEMENT_DAYS,
        help=f"validity of a current key's statement (default {DEFAULT_STATEMENT_DAYS})",
    )


def _when(moment: datetime | None) -> str:
    return format_time(moment) if moment else "-"


def _describe(key: OprfKey) -> str:
    if key.statement is None:
        stated = "no statement"
    else:
        statement = key.statement.unverified()
        stated = f"statement {_when(statement.not_before)}..{_when(statement.not_after)}"
    return (
        f"{key.key_id}\t{key.state.value}\t"
        f"created {_when(key.created_at)}\tvalid until {_when(key.valid_until)}\t{stated}"
    )


def run_keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Carry out one keys action; the exit status."""
    if args.keys_action in ("new", "sign", "notifier-statement") and args.signing_key is None:
        err.write("--signing-key is required to sign key statements (or BREACHMATCH_SIGNING_KEY)\n")
        return 2
    if args.keys_action == "notifier-statement":
        return _notifier_statement(args, out, err)
    if args.oprf_key_dir is None:
        err.write("--oprf-key-dir is required (or BREACHMATCH_OPRF_KEY_DIR)\n")
        return 2
    ring = KeyRing.load(args.oprf_key_dir)
    try:
        if args.keys_action == "new":
            key = ring.new_key(
                load_signing_key(args.signing_key),
                grace=timedelta(days=args.grace_days),
                lifetime=timedelta(days=args.statement_days),
            )
            out.write(f"new current key {key.key_id}\n")
        elif args.keys_action == "sign":
            signing = load_signing_key(args.signing_key)
            for key in ring.sign_statements(signing, timedelta(days=args.statement_days)):
                out.write(_describe(key) + "\n")
        elif args.keys_action == "retire":
            key = ring.retire(args.key_id)
            out.write(f"retired {key.key_id}\n")
        else:
            for key in ring.all():
                out.write(_describe(key) + "\n")
    except BrokenPipeError:
        raise  # a reader that went away (`| head`): `quiet_on_closed_pipe` exits 141
    except (KeyRingError, OSError, ValueError, nacl.exceptions.CryptoError) as exc:
        err.write(f"{exc}\n")
        return 1
    return 0


def _notifier_statement(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        signed = notifier_statement(
            load_sealing_public_key(args.notifier_public_key),
            load_signing_key(args.signing_key),
            timedelta(days=args.statement_days),
        )
        args.out.write_text(signed.to_json())
    except (OSError, ValueError, StatementError, nacl.exceptions.CryptoError) as exc:
        err.write(f"cannot sign the notifier key: {exc}\n")
        return 1
    statement = signed.unverified()
    out.write(
        f"notifier key {statement.key_id} stated until {_when(statement.not_after)} in {args.out}\n"
    )
    return 0
