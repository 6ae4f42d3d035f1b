"""Peers that cannot be reached: give up in bounded time, and say so in one line.

An operator who points a command at the wrong NATS address must hear "cannot
reach NATS at tls://…" within seconds, not watch it wait forever or scroll
through a traceback per retry. Two rules, used by `bus.connect`:

* Start-up gives up after a bounded time (``--connect-timeout``, default
  `DEFAULT_CONNECT_TIMEOUT`) with `UnreachableError`; every command turns it
  into one line naming the address and exit status `EXIT_UNREACHABLE`.
* While retrying — before start-up gives up, or after a running service lost
  NATS — retries stay fast (recovery must not wait for a long backoff), but
  the log gets one line per *doubling* of the failed attempts (1, 2, 4, 8, …),
  without a traceback: a ten-minute outage costs about a dozen lines, not
  thousands. Losing and regaining the connection are one line each.

A server that answers is not yet a server that serves: a NATS cluster that is
starting elects a JetStream meta leader first, and until then (and until
enough servers are up to place a replicated stream) JetStream answers "not
available" or nothing at all. `until_ready` waits that out with backoff, one
line per backoff step, and gives up after the same kind of bound with
`NotReadyError` (an `UnreachableError`: the same one line and exit status).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from breachmatch import logs

log = logs.get_logger(__name__)

#: sysexits.h EX_UNAVAILABLE: a service this command needs could not be reached.
EXIT_UNREACHABLE = 69
#: Seconds a command keeps trying to reach NATS at start-up before it gives up.
DEFAULT_CONNECT_TIMEOUT = 30.0


class UnreachableError(ConnectionError):
    """A peer did not answer within the allowed time; the message names it."""

    def __init__(self, what: str, address: str, seconds: float, cause: str) -> None:
        super().__init__(
            f"cannot reach {what} at {address} (gave up after {seconds:g} s: {cause}); "
            "is it running, and is the address right?"
        )
        self.address = address


class NotReadyError(UnreachableError):
    """A peer answered but could not serve within the allowed time; the message says why."""

    def __init__(self, what: str, address: str, seconds: float, cause: str) -> None:
        ConnectionError.__init__(
            self,
            f"{what} at {address} did not become ready (gave up after {seconds:g} s: {cause}); "
            "are enough of its servers up to elect a leader?",
        )
        self.address = address


#: First and longest wait between two attempts while a peer is not ready.
FIRST_BACKOFF = 0.25
MAX_BACKOFF = 4.0

T = TypeVar("T")


async def until_ready(
    what: str,
    address: str,
    attempt: Callable[[], Awaitable[T]],
    not_ready: Callable[[BaseException], bool],
    give_up_after: float,
    *,
    started: float | None = None,
) -> T:
    """`attempt()`'s result, retried while it fails with an error `not_ready` accepts.

    Waits double from `FIRST_BACKOFF` to `MAX_BACKOFF`, one warning line each
    (no traceback); any other error is raised at once. An attempt still
    running at the deadline is cancelled, so the bound holds even when the
    peer does not answer at all; then `NotReadyError` names the last cause.
    The bound runs from `started` (the event loop's clock) when the caller
    spent part of it already, as `bus.connect` does on connecting.
    """
    loop = asyncio.get_running_loop()
    deadline = (loop.time() if started is None else started) + give_up_after
    delay = FIRST_BACKOFF
    step = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                return await attempt()
        except Exception as error:  # classified by `not_ready`; the rest re-raised
            if not (not_ready(error) or isinstance(error, TimeoutError)):
                raise
            cause = describe_error(error)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NotReadyError(what, address, give_up_after, cause) from None
        step += 1
        wait = min(delay, remaining)
        log.warning(
            f"{what} not ready; waiting", server=address, step=step, retry_in_s=wait, error=cause
        )
        await asyncio.sleep(wait)
        delay = min(delay * 2, MAX_BACKOFF)


def public_address(url: str) -> str:
    """`url` without user name or password, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


def describe_error(error: BaseException) -> str:
    """One line for a connection error: its type, and its message when it has one."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    return f"{name}: {text}" if text else name


class ConnectionLog:
    """nats-py callbacks that log the connection's story in a few lines (see module doc)."""

    def __init__(self, what: str, url: str) -> None:
        self.what = what
        self.address = public_address(url)
        self.failures = 0
        self.last_error = "no answer"

    async def error(self, error: Exception) -> None:
        self.failures += 1
        self.last_error = describe_error(error)
        if self.failures & (self.failures - 1) == 0:  # 1, 2, 4, 8, ...
            log.warning(
                f"cannot reach {self.what}; retrying",
                server=self.address,
                failed_attempts=self.failures,
                error=self.last_error,
            )

    async def disconnected(self) -> None:
        log.warning(f"lost the connection to {self.what}", server=self.address)

    async def reconnected(self) -> None:
        log.info(
            f"connected to {self.what} again", server=self.address, failed_attempts=self.failures
        )
        self.failures = 0

    def callbacks(self) -> dict[str, Callable[..., Awaitable[None]]]:
        """Keyword arguments for `nats.connect`."""
        return {
            "error_cb": self.error,
            "disconnected_cb": self.disconnected,
            "reconnected_cb": self.reconnected,
        }

    def gave_up(self, seconds: float) -> UnreachableError:
        return UnreachableError(self.what, self.address, seconds, self.last_error)
