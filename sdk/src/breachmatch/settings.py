"""Command-line flags with environment fallbacks, validated the same way both ways.

Every flag of every CLI and service can also be given as an environment
variable ``BREACHMATCH_<FLAG>`` (``--nats-url`` → ``BREACHMATCH_NATS_URL``), so
a sourced stack env (``.var/stack.env``) or a Kubernetes ConfigMap is enough
to configure anything. Precedence: flag, then environment, then default. The
help text names the variable, so ``--help`` documents the configuration.

A value from the environment is checked exactly like the same value given as
the flag: the flag's ``type`` and ``choices`` apply, and a switch
(``store_true``) takes only a yes/no word. A bad value ends the process with
argparse's usage error (exit status 2) naming the flag *and* the variable —
never a traceback from deep inside start-up, and never a silent default.

How: argparse converts a *string* default with the action's ``type`` when the
flag is absent, and only then (documented behaviour). So the environment
value becomes the default, marked as coming from the environment, and the
action's type is wrapped to check choices and switch words for such values.
Given on the command line, the flag goes through the original type and
argparse's own choices check. This keeps plain argparse (no new dependency,
``--help`` unchanged) and puts the check in one place, so a new setting
cannot forget it.

The argparse ``type=`` functions below are the project's shared value
checks; each raises `argparse.ArgumentTypeError` with a message that says
what is expected.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from breachmatch.reachability import DEFAULT_CONNECT_TIMEOUT, EXIT_UNREACHABLE
from breachmatch.readers import ReaderError, check_encoding
from breachmatch.tls import TlsFiles

ENV_PREFIX = "BREACHMATCH_"

#: Which environment variable feeds each action (read by `env_variable`).
_VARIABLES: weakref.WeakKeyDictionary[argparse.Action, str] = weakref.WeakKeyDictionary()

_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off"})


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def env_variable(action: argparse.Action) -> str | None:
    """The environment variable behind `action`, if it was added by `add_env_argument`."""
    return _VARIABLES.get(action)


def switch(text: str) -> bool:
    """A yes/no word (1/true/yes/on, 0/false/no/off); anything else is refused, not false."""
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise argparse.ArgumentTypeError("must be one of 1, true, yes, on, 0, false, no, off")


class _FromEnvironment(str):
    """A default that came from the environment (argparse hands it back to `type`)."""

    __slots__ = ()


def add_env_argument(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    env: str | None = None,
    help: str = "",
    **kwargs: Any,
) -> argparse.Action:
    """`parser.add_argument` whose default comes from the environment when set."""
    variable = env or env_name(flag)
    default = kwargs.get("default")
    shown = f" (env {variable}" + (f", default {default}" if default not in (None, False) else "")
    action = parser.add_argument(flag, help=f"{help}{shown})", **kwargs)
    _VARIABLES[action] = variable
    raw = os.environ.get(variable) or None  # an empty variable means "not set"
    if raw is not None:
        action.type = _environment_checked(action, variable)
        action.default = _FromEnvironment(raw)
    return action


def _environment_checked(action: argparse.Action, variable: str) -> Callable[[str], Any]:
    """`action`'s type, also checking choices and switch words for environment values."""
    convert = action.type
    choices = action.choices
    takes_value = action.nargs != 0
    unset = action.default

    def checked(text: str) -> Any:
        if not isinstance(text, _FromEnvironment):  # the flag itself: argparse checks it
            return convert(text) if callable(convert) else text
        try:
            if not takes_value:  # store_true/store_const: the word says "as if given"
                return action.const if switch(text) else unset
            value = convert(str(text)) if callable(convert) else str(text)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{variable}={text!r}: {error}") from None
        except (TypeError, ValueError):
            kind = getattr(convert, "__name__", "")
            raise argparse.ArgumentTypeError(f"{variable}={text!r}: invalid {kind} value") from None
        if choices is not None and value not in choices:
            allowed = ", ".join(map(str, choices))
            raise argparse.ArgumentTypeError(f"{variable}={text!r}: must be one of {allowed}")
        return value

    # argparse names the type in its own messages about flag values.
    checked.__name__ = getattr(convert, "__name__", "str")
    return checked


# --- shared argparse types -------------------------------------------------------


def positive_int(text: str) -> int:
    """argparse `type=` for counts that must be at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse `type=` for counts where 0 means "none"."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_seconds(text: str) -> float:
    """argparse `type=` for a duration: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def non_negative_number(text: str) -> float:
    """argparse `type=` for a finite quantity where 0 is allowed (days of grace)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a number, 0 or more")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None


def text_encoding(text: str) -> str:
    """argparse `type=` for ``--encoding``: a text codec Python knows, by its canonical name."""
    try:
        return check_encoding(text.strip())
    except ReaderError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_OFF = frozenset({"", "off", "none"})


def host_port(text: str) -> str:
    """argparse `type=` for ``HOST:PORT`` (a listener or a service to dial)."""
    host, sep, port = text.strip().rpartition(":")
    if not (sep and host and port.isdigit() and 0 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError("must be HOST:PORT with a port from 0 to 65535")
    return text.strip()


def optional_host_port(text: str) -> str | None:
    """`host_port`, or None for "off"/"none": a listener that can be switched off.

    An empty environment variable counts as unset (see `add_env_argument`), so
    switching a listener off needs a word, not an empty string.
    """
    return None if text.strip().lower() in _OFF else host_port(text)


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def nats_url(text: str) -> str:
    """argparse `type=` for a NATS server URL (``tls://host:port``: NATS requires TLS)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port  # raises ValueError when not a number or out of range
    except ValueError:
        port, parts = -1, urlsplit("")
    if parts.scheme not in NATS_SCHEMES or not parts.hostname or port == -1:
        schemes = "/".join(NATS_SCHEMES)
        raise argparse.ArgumentTypeError(f"must be a URL like tls://HOST:4222 ({schemes})")
    return text.strip()


# --- NATS and logging flags, the same on every command ------------------------------

#: NATS requires TLS with a client certificate (`breachmatch.nats_auth`).
DEFAULT_NATS_URL = "tls://127.0.0.1:4222"


def tls_directory(text: str) -> Path:
    """argparse `type=` for a certificate directory to present: ca.crt, tls.crt, tls.key.

    Checked when parsed, so a wrong ``--nats-tls-dir`` is a usage error
    naming the flag (or variable) before anything tries to connect.
    """
    directory = Path(text.strip())
    if not directory.is_dir():
        raise argparse.ArgumentTypeError("must be a directory holding ca.crt, tls.crt, tls.key")
    files = TlsFiles.from_dir(directory)
    missing = [path.name for path in (files.ca, files.cert, files.key) if not path.is_file()]
    if missing:
        raise argparse.ArgumentTypeError(f"directory lacks {', '.join(missing)}")
    return directory


def add_nats_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nats-url``, ``--nats-tls-dir`` and ``--connect-timeout``.

    Where NATS is, which certificate to present, and how long start-up may try
    to reach it. Services default the NATS certificate to their gRPC one
    (``--tls-dir``): one identity per service, mapped by nats-server to that
    service's user.
    """
    add_env_argument(
        parser, "--nats-url", type=nats_url, default=DEFAULT_NATS_URL, help="NATS server URL"
    )
    add_env_argument(
        parser,
        "--nats-tls-dir",
        type=tls_directory,
        help="NATS client certificate directory: ca.crt, tls.crt, tls.key "
        "(default: --tls-dir where the command has one)",
    )
    add_env_argument(
        parser,
        "--connect-timeout",
        type=positive_seconds,
        default=DEFAULT_CONNECT_TIMEOUT,
        help=f"seconds to keep trying to reach NATS at start-up; then exit {EXIT_UNREACHABLE}",
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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "json", "console")


def add_log_arguments(parser: argparse.ArgumentParser, *, default_level: str = "INFO") -> None:
    """``--log-level`` and ``--log-format`` (JSON unless stderr is a terminal)."""
    add_env_argument(
        parser,
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default_level,
        help="log verbosity on stderr (logs never carry identifiers)",
    )
    add_env_argument(
        parser,
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="log format (auto: JSON lines unless stderr is a terminal)",
    )


def add_version_argument(parser: argparse.ArgumentParser, distribution: str) -> None:
    """``--version``: the installed distribution's version (one source: its pyproject)."""
    version = importlib.metadata.version(distribution)
    parser.add_argument("--version", action="version", version=f"{parser.prog} {version}")
