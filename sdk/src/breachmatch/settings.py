"""Command-line flags with environment fallbacks.

Every flag of every CLI and service can also be given as an environment
variable ``BREACHMATCH_<FLAG>`` (``--nats-url`` → ``BREACHMATCH_NATS_URL``), so
a sourced stack env (``.var/stack.env``) or a Kubernetes ConfigMap is enough
to configure anything. Precedence: flag, then environment, then default. The
help text names the variable, so ``--help`` documents the configuration.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from breachmatch.tls import TlsFiles

ENV_PREFIX = "BREACHMATCH_"

#: NATS requires TLS with a client certificate (`breachmatch.nats_auth`).
DEFAULT_NATS_URL = "tls://127.0.0.1:4222"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def add_env_argument(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    env: str | None = None,
    default: Any = None,
    help: str = "",
    **kwargs: Any,
) -> argparse.Action:
    """`parser.add_argument` whose default comes from the environment when set."""
    variable = env or env_name(flag)
    raw = os.environ.get(variable) or None  # an empty variable means "not set"
    action = kwargs.get("action")
    if raw is not None:
        if action in ("store_true", "store_false"):
            value: Any = _truthy(raw)
        elif "type" in kwargs and callable(kwargs["type"]):
            value = kwargs["type"](raw)
        else:
            value = raw
    else:
        value = default
    shown = f" (env {variable}" + (f", default {default}" if default not in (None, False) else "")
    return parser.add_argument(flag, default=value, help=f"{help}{shown})", **kwargs)


_OFF = frozenset({"", "off", "none"})


def optional_address(value: str | None) -> str | None:
    """A listener address flag where "off" (or "none") disables the listener.

    An empty environment variable counts as unset (see `add_env_argument`), so
    switching a listener off needs a word, not an empty string.
    """
    return None if value is None or value.strip().lower() in _OFF else value


def positive_int(text: str) -> int:
    """argparse `type=` for counts that must be at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=` for counts where 0 means "none"."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_nats_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--nats-url`` and ``--nats-tls-dir``: where NATS is and which certificate to present.

    Services default the NATS certificate to their gRPC one (``--tls-dir``):
    one identity per service, mapped by nats-server to that service's user.
    """
    add_env_argument(parser, "--nats-url", default=DEFAULT_NATS_URL, help="NATS server URL")
    add_env_argument(
        parser,
        "--nats-tls-dir",
        type=Path,
        help="NATS client certificate directory: ca.crt, tls.crt, tls.key "
        "(default: --tls-dir where the command has one)",
    )


def nats_tls(nats_tls_dir: Path | None, tls_dir: Path | None = None) -> TlsFiles:
    """The NATS client certificate files: `nats_tls_dir`, else the service's own `tls_dir`."""
    directory = nats_tls_dir or tls_dir
    if directory is None:
        raise ValueError(
            "--nats-tls-dir (or BREACHMATCH_NATS_TLS_DIR) is required: NATS admits "
            "only clients with a service certificate"
        )
    return TlsFiles.from_dir(directory)
