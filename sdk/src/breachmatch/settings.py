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
from typing import Any

ENV_PREFIX = "BREACHMATCH_"


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
