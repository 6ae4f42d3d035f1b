"""Following the matcher's breach events, across restarts and disconnects.

The matcher numbers breach events (JetStream sequences) and replays those
after a given sequence, so a hospital never misses one: the last sequence it
*finished* handling is kept in the state directory and every (re)connection
asks for what came after. A sequence is committed only after its breach was
checked (and notices submitted), so a crash in between means the breach is
checked again — harmless, since checks are idempotent and notices carry
idempotency keys — never skipped.

Streams get a deadline like every RPC (`SESSION_SECONDS`); when it expires the
watch simply reconnects. UNAVAILABLE is retried forever with capped
exponential backoff: a watch is a long-running service that must outlive a
matcher upgrade. Anything else ends it with an explanation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from breachmatch.client.connection import is_retryable
from breachmatch.client.errors import ConfigurationError
from breachmatch.client.matcher import MatcherClient
from breachmatch.keys import write_secret_file
from breachmatch.v1 import breach_pb2

#: Each WatchBreaches call lasts at most this long, then the watch reconnects.
SESSION_SECONDS = 3600.0
#: How often the canceller looks whether the watch ended by itself.
_STOP_POLL_SECONDS = 0.25


class BreachWatch:
    def __init__(self, matcher: MatcherClient, cursor: Path, stop: threading.Event) -> None:
        self._matcher = matcher
        self._cursor = cursor
        self._stop = stop
        self._lock = threading.Lock()
        self._call: Any = None
        self._closed = threading.Event()

    @property
    def last_sequence(self) -> int:
        if not self._cursor.exists():
            return 0
        text = self._cursor.read_text().strip()
        if not text.isdigit():
            raise ConfigurationError(
                f"the watch cursor {self._cursor} is not a sequence number; delete it to "
                "replay every breach event"
            )
        return int(text)

    def commit(self, sequence: int) -> None:
        """Record that every event up to `sequence` has been handled."""
        write_secret_file(self._cursor, f"{sequence}\n")

    def events(self) -> Iterator[tuple[int, breach_pb2.BreachEvent]]:
        """Events after the committed sequence, until `stop` is set."""
        canceller = threading.Thread(target=self._cancel_on_stop, daemon=True)
        canceller.start()
        try:
            yield from self._follow()
        finally:
            self._closed.set()
            canceller.join()

    def _follow(self) -> Iterator[tuple[int, breach_pb2.BreachEvent]]:
        retry = 0
        after = self.last_sequence
        while not self._stop.is_set():
            with self._lock:
                self._call = self._matcher.watch_breaches(after, SESSION_SECONDS)
            try:
                for response in self._call:
                    retry = 0
                    after = response.sequence
                    yield response.sequence, response.event
            except grpc.RpcError as error:
                if self._stop.is_set():
                    return
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the session ended; reconnect at once
                if not is_retryable(error):
                    raise self._matcher.explain(error) from None
            # Disconnected (or the matcher closed the stream): back off, then resume.
            self._stop.wait(self._matcher.backoff.delay(min(retry, 16)))
            retry += 1

    def _cancel_on_stop(self) -> None:
        """Cancel the open call once `stop` is set, so a blocked read returns."""
        while not self._stop.wait(_STOP_POLL_SECONDS):
            if self._closed.is_set():
                return
        with self._lock:
            if self._call is not None:
                self._call.cancel()
