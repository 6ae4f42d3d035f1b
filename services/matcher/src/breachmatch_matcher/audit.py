"""One audit event per Evaluate call: who had how many elements evaluated, under which key.

Budgets stop enumeration; the audit trail lets the operator see it being
attempted and answer "what did hospital X query on day Y" without the
trail itself becoming a copy of the queries: an `EvaluationAudit` carries the
tenant, key id, count and request id — never an element (promise 1).

Events are published from their own task so a call that ends by cancellation
(client gone, deadline passed) still gets its event, and `flush` lets the
service wait for them during shutdown.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext

from breachmatch import bus, logs
from breachmatch.v1 import breach_pb2
from breachmatch_matcher import metrics

log = logs.get_logger(__name__)

PUBLISH_TIMEOUT = 5.0


def audit_subject(tenant: str) -> str:
    return bus.subject_for(bus.AUDIT_EVALUATE, bus.tenant_token(tenant))


class AuditPublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._pending: set[asyncio.Task[None]] = set()

    def emit(self, tenant: str, key_id: str, count: int, request_id: str) -> None:
        """Publish in the background; failures are logged and counted, never raised."""
        event = breach_pb2.EvaluationAudit(
            tenant=tenant,
            key_id=key_id,
            count=count,
            request_id=request_id,
            emitted_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        task = asyncio.create_task(self._publish(audit_subject(tenant), event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, subject: str, event: breach_pb2.EvaluationAudit) -> None:
        try:
            await self._js.publish(subject, event.SerializeToString(), timeout=PUBLISH_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            metrics.AUDIT_PUBLISH_FAILURES.inc()
            log.error(
                "evaluation audit event not published",
                tenant=event.tenant,
                count=event.count,
                error=type(exc).__name__,
            )

    async def flush(self) -> None:
        """Wait for every event emitted so far."""
        if self._pending:
            await asyncio.gather(*self._pending)
