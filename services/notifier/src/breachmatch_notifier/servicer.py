"""The `breachmatch.v1.Outreach` gRPC service.

Every call arrives authenticated, from a hospital (`AuthInterceptor`,
installed by `breachmatch.server.Service`, admits only hospital certificates
to these methods); expired certificates and certificates from another CA
never get this far. A tenant must also be in the operator's tenants
file with a sender identity (organisation and contact point) — a notice in a
hospital's name needs both — else PERMISSION_DENIED / FAILED_PRECONDITION.

* SubmitOutreach → `Intake.submit`: INVALID_ARGUMENT for a malformed item or an
  oversized batch, NOT_FOUND for an unknown breach, FAILED_PRECONDITION for a
  retracted one or one without a proof index (all with the breach's state as
  trailing metadata, `breachmatch.refusals`, so the SDK can skip that breach
  and send the rest), UNAVAILABLE when NATS cannot take the batch (send it
  again). Items that are well-formed but refused (no valid proof of
  match, a rejected name, an address or entry that already has a notice, the
  daily limit) get a receipt with the refusal, per item.
* GetStatus reads the ledger: current state per item of the calling tenant,
  by breach and/or idempotency keys. The ledger keys refs again under the
  notifier's own key, so statuses here identify items by idempotency key
  (WatchStatus events carry the opaque patient ref too).
* WatchStatus streams the tenant's own status events after a sequence.

Messages never quote contact data; they name the item index and the rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import nats.errors

from breachmatch import logs, refusals, tls
from breachmatch.quota import QuotaContentionError
from breachmatch.tenants import Tenants
from breachmatch.v1 import outreach_pb2, outreach_pb2_grpc
from breachmatch_notifier.intake import (
    Intake,
    InvalidItemError,
    RetractedBreachError,
    UnknownBreachError,
)
from breachmatch_notifier.ledger import Ledger, LedgerConflictError
from breachmatch_notifier.proofs import BreachUnprovableError
from breachmatch_notifier.status import StatusEvents

log = logs.get_logger(__name__)

SERVICE_NAME = outreach_pb2.DESCRIPTOR.services_by_name["Outreach"].full_name
#: Most statuses one GetStatus answers; narrow by breach or keys beyond that.
MAX_STATUS_RESULTS = 10_000

_Context = grpc.aio.ServicerContext[Any, Any]
_INTAKE_ERRORS: dict[type[Exception], grpc.StatusCode] = {
    InvalidItemError: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownBreachError: grpc.StatusCode.NOT_FOUND,
    RetractedBreachError: grpc.StatusCode.FAILED_PRECONDITION,
}


class OutreachServicer(outreach_pb2_grpc.OutreachServicer):
    def __init__(
        self, *, intake: Intake, ledger: Ledger, statuses: StatusEvents, tenants: Tenants
    ) -> None:
        self._intake = intake
        self._ledger = ledger
        self._statuses = statuses
        self._tenants = tenants
        self._closing = asyncio.Event()

    def close_watchers(self) -> None:
        """End every WatchStatus stream (at shutdown, before the server drains)."""
        self._closing.set()

    async def _caller(self, context: _Context) -> str:
        tenant = tls.current_tenant()
        if not self._tenants.is_known(tenant):
            log.info("request refused", reason="unknown_tenant")
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "this tenant is not configured for outreach"
            )
        known = self._tenants.get(tenant)
        if not (known.organisation.strip() and known.contact_point.strip()):
            log.info("request refused", reason="no_sender_identity")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "no sender identity (organisation, contact point) is configured for this tenant",
            )
        return tenant

    async def SubmitOutreach(
        self, request: outreach_pb2.SubmitOutreachRequest, context: _Context
    ) -> outreach_pb2.SubmitOutreachResponse:
        tenant = await self._caller(context)
        try:
            receipts = await self._intake.submit(tenant, request.items)
        except InvalidItemError as exc:
            log.info("request refused", reason=type(exc).__name__)
            await context.abort(_INTAKE_ERRORS[type(exc)], str(exc))
        except (UnknownBreachError, RetractedBreachError) as exc:
            log.info("request refused", reason=type(exc).__name__)
            await context.abort(
                _INTAKE_ERRORS[type(exc)], str(exc), ((refusals.BREACH_STATE, exc.state),)
            )
        except BreachUnprovableError as exc:
            log.warning("request refused", reason="breach_unprovable")
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                str(exc),
                ((refusals.BREACH_STATE, refusals.UNPROVABLE),),
            )
        except (LedgerConflictError, QuotaContentionError):
            await context.abort(grpc.StatusCode.ABORTED, "items changed concurrently; submit again")
        except nats.errors.Error as exc:
            log.warning("outreach not queued", error=type(exc).__name__)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the outreach queue is unavailable; submit again"
            )
        return outreach_pb2.SubmitOutreachResponse(receipts=receipts)

    async def GetStatus(
        self, request: outreach_pb2.GetStatusRequest, context: _Context
    ) -> outreach_pb2.GetStatusResponse:
        tenant = await self._caller(context)
        try:
            entries = await self._ledger.entries(tenant, request.breach_id)
        except nats.errors.Error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger is unavailable; retry")
        wanted = set(request.idempotency_keys)
        if wanted:
            entries = [entry for entry in entries if entry.idempotency_key in wanted]
        if len(entries) > MAX_STATUS_RESULTS:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {MAX_STATUS_RESULTS} statuses match; filter by breach_id or keys",
            )
        entries.sort(key=lambda entry: (entry.created_at, entry.idempotency_key))
        return outreach_pb2.GetStatusResponse(statuses=[entry.to_status() for entry in entries])

    async def WatchStatus(
        self, request: outreach_pb2.WatchStatusRequest, context: _Context
    ) -> AsyncIterator[outreach_pb2.WatchStatusResponse]:
        tenant = await self._caller(context)
        try:
            newest = await self._statuses.newest_sequence()
        except nats.errors.Error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "status events are unavailable; retry")
        if request.after_sequence > newest:
            # A cursor from another deployment (or a made-up one): no event can
            # ever follow it, so waiting would silently show nothing.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"after_sequence {request.after_sequence} is beyond the newest status event "
                f"({newest}); watch from a sequence this service sent, or from 0",
            )
        async for sequence, status in self._statuses.watch(
            tenant, request.after_sequence, self._closing
        ):
            yield outreach_pb2.WatchStatusResponse(sequence=sequence, status=status)
