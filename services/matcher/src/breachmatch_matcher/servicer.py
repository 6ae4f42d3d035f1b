"""The `breachmatch.v1.Matcher` gRPC service.

Every call arrives authenticated and authorised: `AuthInterceptor` (installed
by `breachmatch.server.Service`) has checked the client certificate, admitted
its role to the method (`breachmatch.authz`) and names the tenant of hospital
calls. Handlers here only decide what that tenant may have.

Evaluate, per request and in this order — cheapest refusal first, budget
before any group operation:

1. the deadline has not passed (else DEADLINE_EXCEEDED);
2. the key id is set (INVALID_ARGUMENT), known (NOT_FOUND) and still usable
   (FAILED_PRECONDITION "key retired: refresh key info");
3. the batch has 1 to ``max_batch`` elements (INVALID_ARGUMENT naming the limit);
4. the budget is charged for the whole batch (RESOURCE_EXHAUSTED with the
   remaining allowance, see `budget_status`);
5. the elements are validated and evaluated on the worker pool, and the batch
   is proven (RFC 9497 VOPRF: one DLEQ proof under the key id's public key);
   the first invalid element ends the call with INVALID_ARGUMENT naming its
   index. The batch's budget stays spent: validating in the workers touches
   each element once, and a client sending garbage gains nothing from a refund.

Responses come in request order with the batch id echoed and the proof. Messages never
quote what a client sent (a confused client could put an identifier anywhere).

When the call ends, however it ends, one `EvaluationAudit` per key id used
(normally exactly one) records how many elements were charged and handed to
evaluation. A charge that completes just as the caller cancels is billed but
not audited: those elements were never evaluated.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
import grpc.aio
import nats.errors
import structlog

from breachmatch import logs, oprf, tls
from breachmatch.keys import KeyState, OprfKey, RetiredKeyError, UnknownKeyError
from breachmatch.statements import SignedKeyStatement
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_matcher import metrics
from breachmatch_matcher.audit import AuditPublisher
from breachmatch_matcher.bodies import BodyCache, BodyUnavailableError, read_range
from breachmatch_matcher.breaches import BreachIndex
from breachmatch_matcher.budget import BudgetContentionError, BudgetLedger
from breachmatch_matcher.budget_status import budget_exhausted
from breachmatch_matcher.evaluator import Evaluator
from breachmatch_matcher.keyring import LiveKeyRing

log = logs.get_logger(__name__)

SERVICE_NAME = matcher_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name

_Context = grpc.aio.ServicerContext[Any, Any]
_STATES = {
    KeyState.CURRENT: matcher_pb2.OprfKey.STATE_CURRENT,
    KeyState.GRACE: matcher_pb2.OprfKey.STATE_GRACE,
}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _statement_message(signed: SignedKeyStatement) -> matcher_pb2.SignedKeyStatement:
    return matcher_pb2.SignedKeyStatement(
        statement=signed.statement_bytes, signature=signed.signature
    )


def _caller() -> str:
    """The authenticated tenant (`AuthInterceptor` also bound it to the log context)."""
    return tls.current_tenant()


def _request_id() -> str:
    """The id `RequestContextInterceptor` bound for this call (the caller's x-request-id)."""
    return str(structlog.contextvars.get_contextvars().get("request_id", ""))


async def _refuse(context: _Context, code: grpc.StatusCode, reason: str, message: str) -> NoReturn:
    metrics.INVALID_REQUESTS.labels(reason).inc()
    log.info("request refused", reason=reason)
    await context.abort(code, message)


class MatcherServicer(matcher_pb2_grpc.MatcherServicer):
    def __init__(
        self,
        *,
        keys: LiveKeyRing,
        evaluator: Evaluator,
        budget: BudgetLedger,
        audit: AuditPublisher,
        breaches: BreachIndex,
        bodies: BodyCache,
        max_batch: int,
        operator_verify_key: bytes,
        notifier_key_statement: SignedKeyStatement,
    ) -> None:
        self._keys = keys
        self._evaluator = evaluator
        self._budget = budget
        self._audit = audit
        self._breaches = breaches
        self._bodies = bodies
        self._max_batch = max_batch
        self._operator_verify_key = operator_verify_key
        self._notifier_key = _statement_message(notifier_key_statement)

    # --- Evaluate ----------------------------------------------------------

    async def Evaluate(
        self,
        request_iterator: AsyncIterator[matcher_pb2.EvaluateRequest],
        context: _Context,
    ) -> AsyncIterator[matcher_pb2.EvaluateResponse]:
        tenant = _caller()
        charged: Counter[str] = Counter()
        try:
            async for request in request_iterator:
                yield await self._evaluate_one(tenant, request, context, charged)
        finally:
            request_id = _request_id()
            for key_id, count in charged.items():
                self._audit.emit(tenant, key_id, count, request_id)

    async def _evaluate_one(
        self,
        tenant: str,
        request: matcher_pb2.EvaluateRequest,
        context: _Context,
        charged: Counter[str],
    ) -> matcher_pb2.EvaluateResponse:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await _refuse(
                context, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", "deadline exceeded"
            )
        key = await self._key_for(request.key_id, context)
        count = len(request.blinded_elements)
        if count > self._max_batch:
            await _refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "batch_too_large",
                f"batch of {count} elements exceeds the limit of {self._max_batch}",
            )
        if count == 0:
            await _refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, "empty_batch", "a batch needs elements"
            )
        await self._charge(tenant, count, context)
        charged[request.key_id] += count
        elements = list(request.blinded_elements)  # plain bytes for the worker threads
        started = time.perf_counter()
        assert key.secret is not None  # `_key_for` returns usable keys only
        try:
            evaluated, proof = await self._evaluator.blind_evaluate(
                key.secret, key.public_key, elements
            )
        except oprf.InvalidElementError as exc:
            await _refuse(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid_element",
                f"blinded element at index {exc.index} is invalid: {exc.reason}",
            )
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.EVALUATE_BATCHES.labels(tenant).inc()
        metrics.EVALUATED_ELEMENTS.labels(tenant).inc(count)
        return matcher_pb2.EvaluateResponse(
            key_id=request.key_id,
            evaluated_elements=evaluated,
            batch_id=request.batch_id,
            proof=proof,
        )

    async def _key_for(self, key_id: str, context: _Context) -> OprfKey:
        if not key_id:
            await _refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, "no_key_id", "key_id is required"
            )
        try:
            return self._keys.get().key_for(key_id)
        except UnknownKeyError:
            await _refuse(
                context,
                grpc.StatusCode.NOT_FOUND,
                "unknown_key",
                "unknown key id: refresh key info (GetKeyInfo)",
            )
        except RetiredKeyError:
            await _refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "retired_key",
                "key retired: refresh key info (GetKeyInfo) and re-blind",
            )

    async def _charge(self, tenant: str, count: int, context: _Context) -> None:
        try:
            decision = await self._budget.charge(tenant, count)
        except (nats.errors.Error, TimeoutError, BudgetContentionError) as exc:
            log.warning("budget store unavailable", error=type(exc).__name__)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "evaluation budget cannot be checked now; retry"
            )
        if not decision.granted:
            metrics.BUDGET_REJECTIONS.labels(tenant).inc()
            log.info("budget exhausted", batch=count, remaining=decision.remaining)
            message, trailers = budget_exhausted(count, decision)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=trailers
            )

    # --- keys --------------------------------------------------------------

    async def GetKeyInfo(
        self, request: matcher_pb2.GetKeyInfoRequest, context: _Context
    ) -> matcher_pb2.GetKeyInfoResponse:
        ring = self._keys.get()
        try:
            current = ring.current
        except UnknownKeyError:
            log.error("no current oprf key")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no OPRF key is current; retry later")
        keys = [
            matcher_pb2.OprfKey(
                key_id=key.key_id,
                state=_STATES[key.state],
                valid_until=_rfc3339(key.valid_until) if key.valid_until else "",
                statement=_statement_message(key.statement) if key.statement else None,
            )
            for key in ring.valid()
        ]
        return matcher_pb2.GetKeyInfoResponse(
            current_key_id=current.key_id,
            keys=keys,
            operator_verify_key=self._operator_verify_key,
            notifier_key=self._notifier_key,
            max_batch_size=self._max_batch,
        )

    # --- breaches ----------------------------------------------------------

    async def ListBreaches(
        self, request: matcher_pb2.ListBreachesRequest, context: _Context
    ) -> matcher_pb2.ListBreachesResponse:
        return matcher_pb2.ListBreachesResponse(
            breaches=[served.artifact for served in self._breaches.served()]
        )

    async def GetBreach(
        self, request: matcher_pb2.GetBreachRequest, context: _Context
    ) -> AsyncIterator[matcher_pb2.GetBreachResponse]:
        _caller()
        served = self._breaches.get(request.breach_id)
        if served is None:
            await _refuse(
                context, grpc.StatusCode.NOT_FOUND, "unknown_breach", "no such breach is served"
            )
        size = served.manifest.body_size
        if request.offset > size:
            await _refuse(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                "offset_out_of_range",
                f"offset {request.offset} is beyond the body's {size} bytes",
            )
        yield matcher_pb2.GetBreachResponse(artifact=served.artifact, offset=request.offset)
        if request.offset == size:
            return
        try:
            path = await self._bodies.local_copy(served)
        except BodyUnavailableError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "breach body unavailable; retry")
        async for offset, chunk in read_range(path, request.offset):
            yield matcher_pb2.GetBreachResponse(chunk=chunk, offset=offset)

    async def WatchBreaches(
        self, request: matcher_pb2.WatchBreachesRequest, context: _Context
    ) -> AsyncIterator[matcher_pb2.WatchBreachesResponse]:
        _caller()
        async for sequence, event in self._breaches.events_after(request.after_sequence):
            yield matcher_pb2.WatchBreachesResponse(sequence=sequence, event=event)
