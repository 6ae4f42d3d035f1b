"""The Matcher gRPC calls, with deadlines, retries and readable errors.

Thin on purpose: each method is one RPC. Unary calls are retried here
(`call_with_retries`); streams are returned as gRPC call objects (iterable
and cancellable) because what a retry means for them — resume a download at
an offset, resume a watch after a sequence, re-send unfinished batches — is
the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from breachmatch.client.connection import Endpoint, call_unary, explain
from breachmatch.client.errors import ClientError
from breachmatch.client.retry import Backoff
from breachmatch.statements import SignedKeyStatement
from breachmatch.v1 import breach_pb2, matcher_pb2, matcher_pb2_grpc

#: Deadline of unary calls, in seconds.
UNARY_DEADLINE = 30.0
#: Deadline of one breach download; an interrupted download resumes at its offset.
DOWNLOAD_DEADLINE = 600.0


@dataclass(frozen=True)
class KeyInfo:
    """What GetKeyInfo says, as received: nothing in it is trusted until `key_trust` checks it."""

    current_key_id: str
    #: Every key id the matcher evaluates, with its statement (None if it sent none).
    statements: dict[str, SignedKeyStatement | None]
    operator_verify_key: bytes
    notifier_statement: SignedKeyStatement | None
    max_batch_size: int

    @property
    def valid_key_ids(self) -> frozenset[str]:
        return frozenset(self.statements)


def _statement(message: matcher_pb2.SignedKeyStatement, present: bool) -> SignedKeyStatement | None:
    if not present:
        return None
    return SignedKeyStatement(bytes(message.statement), bytes(message.signature))


class MatcherClient:
    def __init__(self, channel: grpc.Channel, endpoint: Endpoint, backoff: Backoff) -> None:
        self._stub = matcher_pb2_grpc.MatcherStub(channel)
        self.endpoint = endpoint
        self.backoff = backoff

    def explain(self, error: grpc.RpcError) -> ClientError:
        return explain(error, self.endpoint)

    def key_info(self) -> KeyInfo:
        info = call_unary(
            self._stub.GetKeyInfo,
            matcher_pb2.GetKeyInfoRequest(),
            self.endpoint,
            self.backoff,
            UNARY_DEADLINE,
        )
        statements = {
            key.key_id: _statement(key.statement, key.HasField("statement")) for key in info.keys
        }
        statements.setdefault(info.current_key_id, None)
        return KeyInfo(
            current_key_id=info.current_key_id,
            statements=statements,
            operator_verify_key=bytes(info.operator_verify_key),
            notifier_statement=_statement(info.notifier_key, info.HasField("notifier_key")),
            max_batch_size=info.max_batch_size,
        )

    def list_breaches(self) -> list[breach_pb2.BreachArtifact]:
        response = call_unary(
            self._stub.ListBreaches,
            matcher_pb2.ListBreachesRequest(),
            self.endpoint,
            self.backoff,
            UNARY_DEADLINE,
        )
        return list(response.breaches)

    def get_breach(self, breach_id: str, offset: int) -> Iterator[matcher_pb2.GetBreachResponse]:
        """The artifact, then the body's chunks from `offset`."""
        return iter(
            self._stub.GetBreach(
                matcher_pb2.GetBreachRequest(breach_id=breach_id, offset=offset),
                timeout=DOWNLOAD_DEADLINE,
            )
        )

    def watch_breaches(self, after_sequence: int, deadline: float) -> Any:
        """The WatchBreaches call: iterate it for events, `.cancel()` it to stop."""
        return self._stub.WatchBreaches(
            matcher_pb2.WatchBreachesRequest(after_sequence=after_sequence), timeout=deadline
        )

    def evaluate(self, requests: Iterator[matcher_pb2.EvaluateRequest], deadline: float) -> Any:
        """The Evaluate call: iterate it for responses, `.cancel()` it to stop."""
        return self._stub.Evaluate(requests, timeout=deadline)
