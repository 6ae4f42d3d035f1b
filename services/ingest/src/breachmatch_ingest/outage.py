"""The coordinator's NATS operations, retried through a NATS outage within a bound.

A nats-server that restarts mid-job (a crash, a node drained, an upgrade)
must not fail a job that has hours of OPRF work behind it. nats-py reconnects
on its own, but a request made while the server is away times out, and
before this the job failed on that first timeout. Every operation the
coordinator makes is safe to repeat: a job record is saved whole, a chunk is
published under its dedup id, a result is collected once per index, and a
publication reads the breach's history before it announces anything. So
each is retried while the error says NATS is away or JetStream is not
serving yet, with `reachability.until_ready`'s backoff and one log line per
step, and gives up with `NotReadyError` (exit 69 from the CLI, the job left
to resume) once the outage has lasted the bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.reachability import until_ready

T = TypeVar("T")

#: Errors of a connection that is away for now (nats-py keeps reconnecting).
_AWAY = (
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.UnexpectedEOF,
    ConnectionError,
)


def transient(error: BaseException) -> bool:
    """Whether `error` means NATS is away or not serving yet, rather than refusing."""
    return isinstance(error, _AWAY) or bus.not_ready(error)


async def through_outage(
    js: JetStreamContext, what: str, attempt: Callable[[], Awaitable[T]], give_up_after: float
) -> T:
    """`attempt()`, repeated while NATS is away, for at most `give_up_after` seconds.

    `attempt` must be safe to repeat: a try that timed out may have done its
    work all the same.
    """
    return await until_ready(what, bus.address_of(js), attempt, transient, give_up_after)
