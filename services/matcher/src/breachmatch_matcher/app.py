"""One matcher process: connect, replay, serve, drain — in that order.

`MatcherApp` is what `breachmatch-matcher serve` runs and what the tests start
in-process, so both exercise the same wiring. Start-up order matters: NATS
streams and buckets exist, the breach index has replayed the stream and the
worker processes are up *before* the gRPC port opens, so the first call a
hospital makes sees every breach and pays no process start-up. Shutdown
reverses it: watchers are released, health turns NOT_SERVING, in-flight calls
drain (up to ``drain_seconds``), then audit events are flushed and everything
else closes.

If the breach index stops following its stream while serving (it should
not: the ordered consumer rides out NATS restarts), the process shuts down
with a failure status instead of serving a stale list; Kubernetes restarts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc.aio
from nats.aio.client import Client as NatsClient

from breachmatch import bus, keys, logs, statements
from breachmatch.server import Service, watch_nats_health
from breachmatch.tenants import Tenants
from breachmatch.v1 import matcher_pb2_grpc
from breachmatch_matcher.audit import AuditPublisher
from breachmatch_matcher.bodies import BodyCache
from breachmatch_matcher.breaches import BreachIndex
from breachmatch_matcher.budget import BudgetLedger
from breachmatch_matcher.config import MatcherConfig
from breachmatch_matcher.evaluator import Evaluator
from breachmatch_matcher.keyring import LiveKeyRing
from breachmatch_matcher.servicer import SERVICE_NAME, MatcherServicer

log = logs.get_logger(__name__)

CLIENT_NAME = "breachmatch-matcher"


@dataclass
class _Running:
    nc: NatsClient
    bodies: BodyCache
    breaches: BreachIndex
    evaluator: Evaluator
    audit: AuditPublisher
    budget: BudgetLedger
    health: asyncio.Task[None]


class MatcherApp:
    def __init__(
        self,
        config: MatcherConfig,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    ) -> None:
        self.config = config
        self.service = Service("matcher", config.server_config(), interceptors)
        self._running: _Running | None = None
        self.failed = False

    @property
    def port(self) -> int:
        return self.service.bound_port

    async def start(self) -> None:
        config = self.config
        # Read every file first: a missing key must stop start-up before any connection.
        tenants = Tenants.load(config.tenants_file)
        verify_key = keys.load_verify_key(config.verify_key)
        notifier_statement = keys.load_key_statement(config.notifier_statement)
        # Serving a statement hospitals will refuse helps nobody: fail at start-up instead.
        statements.verify_statement(
            notifier_statement, verify_key, statements.KeyPurpose.NOTIFIER_SEALING
        )
        key_ring = LiveKeyRing(config.oprf_key_dir)
        current = key_ring.get().current
        log.info("oprf key ring loaded", current_key_id=current.key_id)
        if current.statement is None:
            log.error(
                "current oprf key has no signed statement: hospitals will refuse it; "
                "run `breachmatch-matcher keys sign`",
                key_id=current.key_id,
            )

        nc, js = await bus.connect(
            config.nats_url,
            CLIENT_NAME,
            config.nats_tls(),
            give_up_after=config.connect_timeout,
        )
        await bus.ensure_owned(js, "matcher")
        # Breach events and bodies are ingest's: wait for them, never create them.
        async with asyncio.timeout(config.replay_timeout):
            await bus.wait_for_streams(
                js, bus.STREAM_BREACHES, bus.object_stream(bus.OBJ_BREACH_FILTERS)
            )
        budget_kv = await bus.key_value(js, bus.KV_BUDGETS)
        filters = await js.object_store(bus.OBJ_BREACH_FILTERS)

        bodies = BodyCache(filters, config.cache_dir)
        breaches = BreachIndex(js, verify_key, on_withdrawn=bodies.forget)
        evaluator = Evaluator(config.evaluation_workers)
        audit = AuditPublisher(js)
        async with asyncio.timeout(config.replay_timeout):
            await asyncio.gather(breaches.start(), evaluator.start())
        budget = BudgetLedger(budget_kv, tenants)
        budget.start()
        servicer = MatcherServicer(
            keys=key_ring,
            evaluator=evaluator,
            budget=budget,
            audit=audit,
            breaches=breaches,
            bodies=bodies,
            max_batch=config.max_batch,
            operator_verify_key=bytes(verify_key),
            notifier_key_statement=notifier_statement,
        )
        matcher_pb2_grpc.add_MatcherServicer_to_server(servicer, self.service.server)
        await self.service.start([SERVICE_NAME])
        health = asyncio.create_task(watch_nats_health(self.service, lambda: bool(nc.is_connected)))
        self._running = _Running(nc, bodies, breaches, evaluator, audit, budget, health)
        breaches.following.add_done_callback(self._on_index_stopped)
        log.info(
            "matcher ready",
            workers=evaluator.workers,
            max_batch=config.max_batch,
            breaches=len(breaches.served()),
        )

    def _on_index_stopped(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if self._running is not None and not self.service.stopping:
            log.error(
                "breach index stopped following its stream; shutting down",
                error=type(error).__name__ if error else None,
            )
            self.failed = True
            self.service.request_stop()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or `service.request_stop()`); the exit status."""
        self.service.install_signal_handlers()
        await self.service.wait_for_stop()
        await self.stop()
        return 1 if self.failed else 0

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        await running.breaches.close_watchers()
        await self.service.drain()
        await running.health
        await running.audit.flush()
        await running.budget.close()  # unused reserved budget goes back to the shared count
        await running.breaches.stop()
        await asyncio.to_thread(running.evaluator.close)
        running.bodies.close()
        await running.nc.drain()
        log.info("matcher stopped")
