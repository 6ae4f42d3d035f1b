"""One notifier process: check, connect, replay, work (and serve) — then drain.

`NotifierApp` is what ``breachmatch-notifier serve`` (intake gRPC and workers
in one process) and ``breachmatch-notifier worker`` (workers only, to scale
out) run, and what the tests start in-process, so all exercise one wiring.

Start-up reads every file and checks the templates and channels *before*
connecting anywhere: a template that lacks what the law requires, an unusable
channel configuration or a missing key stops the process with an error rather
than letting it send a bad notice. Then the streams, the ledger bucket, the
shared rate counters (`channels.ratelimit`) and the breach catalogue
(replayed to the stream's end) are ready before any worker fetches or the
gRPC port opens.

Shutdown, on SIGTERM/SIGINT: status watchers end, the gRPC service turns
NOT_SERVING and drains its in-flight calls, workers stop fetching and finish
the sends in flight (up to ``drain_seconds``; anything unfinished is
redelivered to another process), then channels and NATS are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from breachmatch import bus, keys, logs
from breachmatch.quota import DailyQuota
from breachmatch.server import Service, watch_nats_health
from breachmatch.tenants import Tenants
from breachmatch.v1 import outreach_pb2_grpc
from breachmatch_notifier import metrics
from breachmatch_notifier.alerts import BreachAlerts, alerts_consumer_config
from breachmatch_notifier.breaches import BreachCatalogue
from breachmatch_notifier.channels import Dispatcher, shared_rate_limits
from breachmatch_notifier.config import NotifierConfig
from breachmatch_notifier.dead_letters import DeadLetters
from breachmatch_notifier.delivery import OutreachDelivery
from breachmatch_notifier.intake import QUOTA_PREFIX, Intake
from breachmatch_notifier.ledger import Ledger, ref_key_for
from breachmatch_notifier.notice import validate_templates
from breachmatch_notifier.probes import WorkerProbes
from breachmatch_notifier.proofs import ProofChecker
from breachmatch_notifier.queue import worker_consumer_config
from breachmatch_notifier.reservations import Reservations
from breachmatch_notifier.servicer import SERVICE_NAME, OutreachServicer
from breachmatch_notifier.status import StatusEvents
from breachmatch_notifier.worker import PullWorkers

log = logs.get_logger(__name__)

CLIENT_NAME = "breachmatch-notifier"
#: Seconds between queue-depth readings for the gauge.
QUEUE_DEPTH_INTERVAL = 10.0


class NotifierApp:
    def __init__(self, config: NotifierConfig, *, intake: bool) -> None:
        self.config = config
        self.service = Service("notifier", config.server_config()) if intake else None
        self.probes = None if intake else WorkerProbes(config.health_addr, config.metrics_addr)
        self._stop = asyncio.Event()
        self._servicer: OutreachServicer | None = None
        self._resources: contextlib.AsyncExitStack | None = None

    @property
    def port(self) -> int:
        """The mTLS gRPC port (0 in worker mode)."""
        return self.service.bound_port if self.service is not None else 0

    async def start(self) -> None:
        """Start everything; on failure, whatever was started is stopped again."""
        async with contextlib.AsyncExitStack() as resources:
            await self._start(resources)
            self._resources = resources.pop_all()

    async def _start(self, resources: contextlib.AsyncExitStack) -> None:
        # Each resource registers its own shutdown as it starts; they run in
        # reverse: intake or probes, then workers, catalogue, NATS, channels.
        config = self.config
        renderer = validate_templates(
            config.template_dir, fallback_language=config.fallback_language
        )
        tenants = Tenants.load(config.tenants_file)
        secret_key = keys.load_sealing_secret_key(config.notifier_secret_key)
        verify_key = keys.load_verify_key(config.verify_key)
        dispatcher = Dispatcher.from_config(config.channels)
        resources.push_async_callback(dispatcher.aclose)

        nc, js = await bus.connect(
            config.nats_url,
            CLIENT_NAME,
            config.nats_tls(),
            give_up_after=config.connect_timeout,
            # Dozens of deliveries in flight, each a chain of requests: gather their writes.
            coalesce_writes=True,
        )
        resources.push_async_callback(_close_nats, nc)
        await bus.ensure_owned(js, "notifier")
        # Breach events and filters are ingest's: wait for them, never create them.
        async with asyncio.timeout(config.replay_timeout):
            await bus.wait_for_streams(
                js, bus.STREAM_BREACHES, bus.object_stream(bus.OBJ_BREACH_FILTERS)
            )
        rates = await bus.key_value(js, bus.KV_NOTIFIER_RATES)
        dispatcher.limit(
            shared_rate_limits(rates, config.channels.rate_limits, dispatcher.channel_names)
        )
        ledger_kv = await bus.key_value(js, bus.KV_OUTREACH_LEDGER)
        ref_key = ref_key_for(secret_key)
        ledger = Ledger(ledger_kv, ref_key)
        statuses = StatusEvents(js)
        proofs = ProofChecker(await js.object_store(bus.OBJ_BREACH_FILTERS), config.cache_dir)
        resources.callback(proofs.close)
        catalogue = BreachCatalogue(js, verify_key, on_withdrawn=proofs.forget)
        resources.push_async_callback(catalogue.stop)
        await catalogue.start(config.replay_timeout)

        workers = PullWorkers(
            js,
            stream=bus.STREAM_OUTREACH,
            consumer=worker_consumer_config(config.ack_wait),
            handler=OutreachDelivery(
                config=config,
                ledger=ledger,
                statuses=statuses,
                dead=DeadLetters(js),
                catalogue=catalogue,
                tenants=tenants,
                renderer=renderer,
                dispatcher=dispatcher,
                proofs=proofs,
                secret_key=secret_key,
            ),
            size=config.workers_per_process,
            retry_delay=config.backoff[0],
        )
        alerts = PullWorkers(
            js,
            stream=bus.STREAM_BREACHES,
            consumer=alerts_consumer_config(config.ack_wait, config.max_deliver),
            handler=BreachAlerts(
                config=config,
                ledger=ledger,
                tenants=tenants,
                dispatcher=dispatcher,
                verify_key=verify_key,
                catalogue=catalogue,
            ),
            # Alerts are worker work: an intake-only process sends none.
            size=min(1, config.workers_per_process),
            retry_delay=config.backoff[0],
        )

        async def stop_workers() -> None:
            grace = config.drain_seconds
            await asyncio.gather(workers.stop(grace), alerts.stop(grace))

        resources.push_async_callback(stop_workers)
        await workers.start()
        await alerts.start()
        self._background(resources, self._track_queue_depth(js), "queue-depth")

        def connected() -> bool:
            return bool(nc.is_connected)

        if self.service is not None:
            intake = Intake(
                js=js,
                ledger=ledger,
                statuses=statuses,
                catalogue=catalogue,
                proofs=proofs,
                reservations=Reservations(ledger_kv, ref_key),
                quota=DailyQuota(ledger_kv, QUOTA_PREFIX),
                tenants=tenants,
                channels=dispatcher.channel_names,
                secret_key=secret_key,
                max_batch=config.max_batch,
            )
            self._servicer = OutreachServicer(
                intake=intake,
                ledger=ledger,
                statuses=statuses,
                tenants=tenants,
            )
            outreach_pb2_grpc.add_OutreachServicer_to_server(self._servicer, self.service.server)
            resources.push_async_callback(self.service.drain)
            await self.service.start([SERVICE_NAME])
            self._background(resources, watch_nats_health(self.service, connected), "nats-health")
        elif self.probes is not None:
            resources.push_async_callback(self.probes.stop)
            await self.probes.start()
            watch = self.probes.watch_nats(connected, self._stop)
            self._background(resources, watch, "nats-health")
        log.info(
            "notifier ready",
            intake=self.service is not None,
            workers=config.workers_per_process,
            channels=list(dispatcher.channel_names),
        )

    @staticmethod
    def _background(
        resources: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str
    ) -> None:
        task = asyncio.create_task(work, name=name)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        resources.push_async_callback(cancel)

    def request_stop(self) -> None:
        self._stop.set()
        if self.service is not None:
            self.service.request_stop()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or `request_stop`); the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.stop()
        return 0

    async def stop(self) -> None:
        resources, self._resources = self._resources, None
        if resources is None:
            return
        self._stop.set()
        if self._servicer is not None:
            self._servicer.close_watchers()
        await resources.aclose()
        log.info("notifier stopped")

    async def _track_queue_depth(self, js: JetStreamContext) -> None:
        """Keep the queue-depth gauge current from the workers' consumer."""
        while not self._stop.is_set():
            try:
                info = await js.consumer_info(bus.STREAM_OUTREACH, bus.CONSUMER_NOTIFIER_WORKERS)
            except nats.errors.Error as exc:
                log.debug("queue depth unavailable", error=type(exc).__name__)
            else:
                metrics.QUEUE_DEPTH.set((info.num_pending or 0) + (info.num_ack_pending or 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), QUEUE_DEPTH_INTERVAL)


async def _close_nats(nc: NatsClient) -> None:
    """Flush what is still buffered; a NATS that is gone has nothing left to take."""
    with contextlib.suppress(nats.errors.Error):
        await nc.drain()
