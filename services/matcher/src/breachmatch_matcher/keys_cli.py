"""``breachmatch-matcher keys new|list|retire``: the operator's OPRF key rotation.

Rotation is explicit because every token depends on the key: ``new`` makes a
key current and puts the previous one into its grace period (hospitals
re-tokenise meanwhile), ``retire`` ends a key at once and erases its secret
from disk. Running matchers pick up either change on their next call
(`keyring.LiveKeyRing`). Output names ids, states and dates only — never a
secret.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from breachmatch.keys import KeyRing, KeyRingError, OprfKey
from breachmatch.settings import add_env_argument, non_negative_number

DEFAULT_GRACE_DAYS = 30.0


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_argument(parser, "--oprf-key-dir", type=Path, help="OPRF key ring directory")
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="make a new current key; the old one enters grace")
    new.add_argument(
        "--grace-days",
        type=non_negative_number,
        default=DEFAULT_GRACE_DAYS,
        help=f"how long the previous key stays valid (default {DEFAULT_GRACE_DAYS:g})",
    )
    actions.add_parser("list", help="key ids, states and validity")
    retire = actions.add_parser("retire", help="retire a key now and erase its secret")
    retire.add_argument("key_id")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _describe(key: OprfKey) -> str:
    return (
        f"{key.key_id}\t{key.state.value}\t"
        f"created {_when(key.created_at)}\tvalid until {_when(key.valid_until)}"
    )


def run_keys(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Carry out one keys action; the exit status."""
    if args.oprf_key_dir is None:
        err.write("--oprf-key-dir is required (or BREACHMATCH_OPRF_KEY_DIR)\n")
        return 2
    ring = KeyRing.load(args.oprf_key_dir)
    try:
        if args.keys_action == "new":
            key = ring.new_key(grace=timedelta(days=args.grace_days))
            out.write(f"new current key {key.key_id}\n")
        elif args.keys_action == "retire":
            key = ring.retire(args.key_id)
            out.write(f"retired {key.key_id}\n")
        else:
            for key in ring.all():
                out.write(_describe(key) + "\n")
    except KeyRingError as exc:
        err.write(f"{exc}\n")
        return 1
    return 0
