"""Bounded exponential backoff with jitter for calls that may fail transiently.

A matcher replica restarting, a rolling deploy or a network blip shows up as
UNAVAILABLE or DEADLINE_EXCEEDED; a few retries spread out in time (jitter,
so a hundred clinics that lost the same replica do not come back in step)
ride that out. Bounded, so a matcher that is really gone is reported within
seconds rather than retried forever.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    #: Upper bound of the first delay, in seconds; it doubles on every retry.
    initial: float = 0.25
    #: Cap on any one delay.
    maximum: float = 5.0
    #: Tries in total, the first one included.
    attempts: int = 6

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based): equal jitter."""
        ceiling = min(self.maximum, self.initial * 2.0**retry)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (jitter, not a secret)


def call_with_retries(
    call: Callable[[], T],
    backoff: Backoff,
    retryable: Callable[[grpc.RpcError], bool],
    stop: threading.Event | None = None,
) -> T:
    """Run `call`, retrying retryable gRPC errors; the last error is re-raised.

    `stop`, when set, ends the waiting early (a watch being shut down).
    """
    pause = stop or threading.Event()
    attempt = 0
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if attempt + 1 >= backoff.attempts or not retryable(error):
                raise
            if pause.wait(backoff.delay(attempt)):
                raise
        attempt += 1
