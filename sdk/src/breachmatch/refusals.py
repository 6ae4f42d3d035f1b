"""Why a service refused a call, in a form a client can act on: gRPC trailing metadata.

A status code says what kind of failure happened, but a client sometimes has
to act differently on causes that share one: the notifier answers
FAILED_PRECONDITION both for a batch naming a retracted breach (the SDK skips
that breach and sends the others) and for a tenant without a sender identity
(nothing can be sent). The human-readable message is not an interface, so the
service attaches the cause as trailing metadata and the client reads it here.
"""

from __future__ import annotations

from typing import Any

import grpc

#: Trailing metadata key: the state of the breach that made the notifier refuse a batch.
BREACH_STATE = "breachmatch-breach-state"
RETRACTED = "retracted"
UNKNOWN = "unknown"
#: Published without a proof index: no proof of match can be checked (the operator republishes).
UNPROVABLE = "unprovable"
_STATES = (RETRACTED, UNKNOWN, UNPROVABLE)


def breach_state(error: grpc.RpcError) -> str | None:
    """`RETRACTED`, `UNKNOWN` or `UNPROVABLE` if `error` refused a batch for its breach."""
    # Both a sync call's error and grpc.aio's AioRpcError carry trailing metadata.
    read: Any = getattr(error, "trailing_metadata", None)
    for key, value in (read() if callable(read) else None) or ():
        if key == BREACH_STATE and value in _STATES:
            return str(value)
    return None
