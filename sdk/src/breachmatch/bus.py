"""NATS JetStream: one place for every stream, bucket and subject name.

Ingest, matcher and notifier meet only through JetStream, so the names and
stream settings they share live here and nowhere else. Every stream, key-value
bucket and object store has one owner (`OWNERS`): only the owner creates it
(`ensure_owned`, idempotent: an existing stream is updated to the declared
config, so the first replica to start creates them and later ones agree) and
writes to it; the NATS permissions (`breachmatch.nats_auth`) enforce exactly
that. A service that reads another's stream waits for it (`wait_for_streams`).

Every connection is mutual TLS with the service's own certificate
(`connect`): nats-server maps the certificate to the service's NATS user and
refuses anyone else. Replies use a per-user inbox prefix, the only inbox that
user may subscribe to.

Every publish of such a connection to one of these streams runs in a
PRODUCER span and carries its W3C trace context in the message headers
(`TracedJetStream`), so a consumer's span joins the publisher's trace
(`breachmatch.tracing`). Key-value and object-store writes are not traced.

Replicas default to 1 (the embedded single-node default) and come from
``BREACHMATCH_NATS_REPLICAS`` (3 on the Kubernetes cluster).

A cluster that is starting is reachable before it can serve: `connect` also
waits, within the same bound, until JetStream answers (a meta leader is
elected), and `ensure_owned` retries while too few servers are up to place a
replicated stream (`reachability.until_ready`), so services started together
with NATS wait for it instead of exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from breachmatch import tracing
from breachmatch.identity import Identity, identity_from_pem
from breachmatch.reachability import (
    DEFAULT_CONNECT_TIMEOUT,
    ConnectionLog,
    public_address,
    until_ready,
)
from breachmatch.tls import TlsFiles

# --- subjects ----------------------------------------------------------------

BREACH_PUBLISHED = "breachmatch.breach.published"
BREACH_RETRACTED = "breachmatch.breach.retracted"
BREACH_EVENTS = "breachmatch.breach.>"  # both of the above: what stream BREACHES holds
AUDIT_EVALUATE = "breachmatch.audit.evaluate"  # + ".<tenant>"
OUTREACH_REQUEST = "breachmatch.outreach.request"  # + ".<tenant>"
OUTREACH_STATUS = "breachmatch.outreach.status"  # + ".<tenant>"
OUTREACH_DEAD = "breachmatch.outreach.dead"  # + ".<tenant>"
INGEST_CHUNK = "breachmatch.ingest.chunk"  # + ".<job>"
INGEST_RESULT = "breachmatch.ingest.result"  # + ".<job>"

# --- streams -----------------------------------------------------------------

STREAM_BREACHES = "BREACHES"
STREAM_AUDIT = "AUDIT"
STREAM_OUTREACH = "OUTREACH"
STREAM_OUTREACH_STATUS = "OUTREACH_STATUS"
STREAM_OUTREACH_DEAD = "OUTREACH_DEAD"
STREAM_INGEST_CHUNKS = "INGEST_CHUNKS"
STREAM_INGEST_RESULTS = "INGEST_RESULTS"

# --- durable consumers ---------------------------------------------------------

#: The one pull consumer every ingest worker binds to (a work queue allows one
#: consumer per subject, so workers share it rather than each making their own).
CONSUMER_INGEST_WORKERS = "ingest-workers"
#: The one pull consumer every notifier worker binds to on STREAM_OUTREACH.
CONSUMER_NOTIFIER_WORKERS = "notifier-workers"
#: The notifier's durable consumer of BREACH_PUBLISHED (new-breach alerts to tenants).
CONSUMER_NOTIFIER_ALERTS = "notifier-breach-alerts"

# --- key-value buckets and object stores ------------------------------------

KV_BUDGETS = "budgets"
KV_OUTREACH_LEDGER = "outreach-ledger"
KV_INGEST_JOBS = "ingest-jobs"
#: The notifier replicas' shared per-channel rate counters (notifier: `channels.ratelimit`).
KV_NOTIFIER_RATES = "notifier-rates"
OBJ_BREACH_FILTERS = "breach-filters"

_DAY = 24 * 3600.0


def replicas() -> int:
    """Stream replicas, 1 to 5 (JetStream's range); a bad value is a configuration error."""
    text = os.environ.get("BREACHMATCH_NATS_REPLICAS", "").strip() or "1"
    if text not in {"1", "2", "3", "4", "5"}:
        raise ValueError("BREACHMATCH_NATS_REPLICAS must be a number of replicas from 1 to 5")
    return int(text)


def subject_for(prefix: str, token: str) -> str:
    """Append one subject token, refusing characters NATS treats as syntax."""
    if not token or any(c in token for c in " .*>\t\r\n"):
        raise ValueError(f"invalid subject token for {prefix}")
    return f"{prefix}.{token}"


_PLAIN_TENANT = re.compile(r"[A-Za-z0-9_-]+")


def tenant_token(tenant: str) -> str:
    """A tenant id as one subject token or KV key segment, injectively.

    Tenant ids are the hospital names of certificate URIs and may hold dots
    (`breachmatch.identity.NAME_PATTERN`), which NATS subjects and KV keys
    treat as syntax. Plain ids
    (letters, digits, ``-``, ``_``) stay as they are so subjects remain
    readable (``...audit.evaluate.hospital-a``); any other id becomes ``=``
    and its UTF-8 bytes in hex. ``=`` never occurs in a plain id, so two
    tenants can never share a token (and hence a budget or an audit subject).
    """
    if _PLAIN_TENANT.fullmatch(tenant):
        return tenant
    return "=" + tenant.encode("utf-8").hex()


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    work_queue: bool = False
    max_age_days: float = 0.0
    duplicate_window_s: float = 120.0

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=self.subjects,
            retention=RetentionPolicy.WORK_QUEUE if self.work_queue else RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas(),
            max_age=self.max_age_days * _DAY if self.max_age_days else None,
            duplicate_window=self.duplicate_window_s,
            discard=DiscardPolicy.OLD,
        )


STREAMS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in (
        # Breach events are every consumer's source of truth (replayed at
        # start-up) and the audit trail of every version; kept forever. Ingest
        # publishes them with Nats-Expected-Last-Sequence, so versions never fork.
        StreamSpec(
            STREAM_BREACHES, [BREACH_PUBLISHED, BREACH_RETRACTED], duplicate_window_s=7 * _DAY
        ),
        StreamSpec(STREAM_AUDIT, [AUDIT_EVALUATE + ".>"], max_age_days=400),
        StreamSpec(
            STREAM_OUTREACH, [OUTREACH_REQUEST + ".>"], work_queue=True, duplicate_window_s=_DAY
        ),
        StreamSpec(STREAM_OUTREACH_STATUS, [OUTREACH_STATUS + ".>"], max_age_days=90),
        StreamSpec(STREAM_OUTREACH_DEAD, [OUTREACH_DEAD + ".>"], max_age_days=90),
        StreamSpec(
            STREAM_INGEST_CHUNKS, [INGEST_CHUNK + ".>"], work_queue=True, duplicate_window_s=_DAY
        ),
        StreamSpec(
            STREAM_INGEST_RESULTS, [INGEST_RESULT + ".>"], max_age_days=7, duplicate_window_s=_DAY
        ),
    )
}


def stream_of(subject: str) -> str | None:
    """The stream of `STREAMS` that stores `subject`, if any."""
    for spec in STREAMS.values():
        for pattern in spec.subjects:
            if subject == pattern or (pattern.endswith(".>") and subject.startswith(pattern[:-1])):
                return spec.name
    return None


class TracedJetStream(JetStreamContext):
    """A JetStream context whose publishes to our streams carry the trace (see module doc).

    Subclassing the context, rather than asking each publisher to add the
    headers, is what keeps a new publisher from forgetting; `connect` hands
    out only this.
    """

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 - the signature we override
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> PubAck:
        name = stream_of(subject)
        if name is None:  # a key-value or object-store write
            return await super().publish(subject, payload, timeout, stream, headers, msg_ttl)
        with tracing.producing(subject, name) as trace_headers:
            return await super().publish(
                subject, payload, timeout, stream, {**(headers or {}), **trace_headers}, msg_ttl
            )


def inbox_prefix(identity: Identity) -> str:
    """The reply-subject prefix of `identity`'s connections (one subject token).

    nats-server lets each user subscribe to its own prefix only
    (`breachmatch.nats_auth`), so no user can read another's API replies.
    """
    return f"_INBOX_{identity.role}_{identity.name}".replace(".", "_")


def client_tls(files: TlsFiles) -> ssl.SSLContext:
    """A TLS context that trusts only `files.ca` and presents `files.cert` (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


#: Turns of the event loop a command waits for others before it is written out ...
FLUSH_YIELDS = 10
#: ... when at least this many requests await their replies; else it goes at once.
COALESCE_FROM = 2


class CoalescingClient(NatsClient):
    """A nats-py client that writes out at most once every few turns of the event loop.

    nats-py writes its pending commands as soon as one is queued. A service
    with many tasks in flight, each waiting for its own reply (the notifier's
    deliveries: ledger reads and compare-and-sets, status publishes, acks),
    thus sends nearly one TLS record — one ``send`` here, one read and
    wake-up in nats-server — per request, and each costs more CPU than the
    request itself. Here, while at least `COALESCE_FROM` requests await their
    replies, the first command queued schedules the write `FLUSH_YIELDS` turns
    of the loop later, and the commands of every task that runs meanwhile go
    out with it, in one write: with that many in flight the wait costs no
    throughput. A request with few others in flight (intake's sequential
    steps) and a forced flush (``flush()``, a full buffer) go out at once.

    The write is kicked by a task of its own, so a caller cancelled meanwhile
    cannot strand the commands queued behind its own. It overrides a private
    method of the pinned nats-py (``Client._flush_pending``);
    ``sdk/tests/test_bus_coalescing.py`` holds its behaviour.
    """

    def __init__(self) -> None:
        super().__init__()
        self._kick: asyncio.Task[Any] | None = None

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        if force_flush or not self.is_connected or len(self._resp_map) < COALESCE_FROM:
            return await super()._flush_pending(force_flush)
        if self._kick is None or self._kick.done():
            self._kick = asyncio.get_running_loop().create_task(self._flush_soon())
        return None

    async def _flush_soon(self) -> None:
        for _ in range(FLUSH_YIELDS):
            await asyncio.sleep(0)
        await super()._flush_pending()


async def connect(
    url: str,
    name: str,
    tls: TlsFiles,
    *,
    give_up_after: float = DEFAULT_CONNECT_TIMEOUT,
    coalesce_writes: bool = False,
    **options: Any,
) -> tuple[NatsClient, JetStreamContext]:
    """Connect as the identity of `tls` (its certificate is the NATS user).

    Start-up raises `UnreachableError` after `give_up_after` seconds of trying;
    once connected, reconnects forever: services ride out a NATS restart.
    Either way failures are logged in a few lines (`reachability.ConnectionLog`).
    The inbox prefix is the identity's own (`inbox_prefix`): the only reply
    subjects its user may read. `options` override nats-py's connect options
    (tests pass ``error_cb`` to see the server's refusals). ``coalesce_writes``
    gathers the requests of many concurrent tasks into fewer writes
    (`CoalescingClient`), for a service that keeps many in flight.
    """
    identity = identity_from_pem(tls.cert.read_bytes())
    story = ConnectionLog("NATS", url)
    settings: dict[str, Any] = {
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        **story.callbacks(),
        **options,
    }
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(give_up_after):
            nc = CoalescingClient() if coalesce_writes else NatsClient()
            await nc.connect(
                servers=[url],
                name=name,
                tls=client_tls(tls),
                inbox_prefix=inbox_prefix(identity),
                **settings,
            )
    except TimeoutError:
        raise story.gave_up(give_up_after) from None
    js = TracedJetStream(nc)
    probe = nc.jetstream(timeout=_PROBE_SECONDS)
    try:
        await until_ready(
            "JetStream",
            story.address,
            lambda: _answers(probe),
            not_ready,
            give_up_after,
            started=started,
        )
    except BaseException:
        await nc.close()
        raise
    return nc, js


#: How long one readiness probe waits for an answer: a server of a cluster
#: without a meta leader often does not answer at all, and the wait is retried.
_PROBE_SECONDS = 2.0

#: JetStream's error code for "no suitable peers for placement": fewer servers
#: are up than a replicated stream needs (a cluster still starting).
_NO_SUITABLE_PEERS = 10005


def not_ready(error: BaseException) -> bool:
    """Whether `error` is JetStream not serving *yet*, rather than refusing.

    A cluster without a meta leader answers "JetStream system temporarily
    unavailable" (503) or, on a server still joining, nothing (a timeout, or
    no responders); with too few servers up it cannot place an R3 stream.
    """
    if isinstance(error, ServiceUnavailableError | NatsTimeoutError | NoRespondersError):
        return True
    return isinstance(error, APIError) and error.err_code == _NO_SUITABLE_PEERS


async def _answers(js: JetStreamContext) -> None:
    """Return once JetStream answers an API request (every user may list stream names)."""
    with contextlib.suppress(NotFoundError):  # no such stream yet: still an answer
        await js.find_stream_name_by_subject(BREACH_PUBLISHED)


def kv_stream(bucket: str) -> str:
    """The stream behind key-value bucket `bucket` (JetStream's naming)."""
    return f"KV_{bucket}"


def object_stream(bucket: str) -> str:
    """The stream behind object store `bucket` (JetStream's naming)."""
    return f"OBJ_{bucket}"


@dataclass(frozen=True)
class Holdings:
    """What one service creates and writes: streams, key-value buckets, object stores."""

    streams: tuple[str, ...] = ()
    key_values: tuple[str, ...] = ()
    object_stores: tuple[str, ...] = ()


#: The owner of every stream and bucket (the NATS user allowed to create and write it).
OWNERS: dict[str, Holdings] = {
    "ingest": Holdings(
        (STREAM_BREACHES, STREAM_INGEST_CHUNKS, STREAM_INGEST_RESULTS),
        (KV_INGEST_JOBS,),
        (OBJ_BREACH_FILTERS,),
    ),
    "matcher": Holdings((STREAM_AUDIT,), (KV_BUDGETS,)),
    "notifier": Holdings(
        (STREAM_OUTREACH, STREAM_OUTREACH_STATUS, STREAM_OUTREACH_DEAD),
        (KV_OUTREACH_LEDGER, KV_NOTIFIER_RATES),
    ),
}


async def ensure_owned(
    js: JetStreamContext, service: str, *, give_up_after: float = DEFAULT_CONNECT_TIMEOUT
) -> None:
    """Create (or update to the declared config) everything `service` owns.

    Retried while JetStream is not ready (`not_ready`: a replicated stream
    needs its servers up), for at most `give_up_after` seconds; every step is
    idempotent, so a retry redoes nothing that succeeded.
    """
    holdings = OWNERS[service]

    async def create() -> None:
        await ensure_streams(js, *holdings.streams)
        for bucket in holdings.key_values:
            await key_value(js, bucket)
        for bucket in holdings.object_stores:
            await object_store(js, bucket)

    what = f"JetStream ({service}'s streams)"
    await until_ready(what, address_of(js), create, not_ready, give_up_after)


def address_of(js: JetStreamContext) -> str:
    """The server `js` talks to, for messages (nats-py keeps its client as `_nc`)."""
    url = js._nc.connected_url
    return public_address(url.geturl()) if url is not None else "NATS"


#: How often a reader looks again for a stream its owner has not created yet.
_STREAM_POLL_SECONDS = 0.5


async def wait_for_streams(js: JetStreamContext, *names: str) -> None:
    """Return once every stream in `names` exists (callers bound the wait).

    A reader may not create another service's stream, and in a cluster the
    services start in any order: the reader waits for the owner rather than
    failing on the first try.
    """
    for name in names:
        while True:
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                await asyncio.sleep(_STREAM_POLL_SECONDS)
            except (ServiceUnavailableError, NatsTimeoutError, NoRespondersError):
                # The owner's stream exists but its servers are still electing.
                await asyncio.sleep(_STREAM_POLL_SECONDS)


async def ensure_streams(js: JetStreamContext, *names: str) -> None:
    """Create (or update to the declared config) the named streams."""
    for name in names:
        config = STREAMS[name].config()
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            # Some settings (retention) cannot change in place; the stream that
            # exists is then the operator's to migrate, not ours to drop.
            with contextlib.suppress(BadRequestError):
                await js.update_stream(config)


#: Buckets whose entries expire: a daily budget is worthless after its day, a
#: rate counter after its second.
_KV_TTL_SECONDS: dict[str, float] = {KV_BUDGETS: 3 * _DAY, KV_NOTIFIER_RATES: 60.0}
#: Buckets nothing is lost without after a restart (a lost counter only lets one
#: window's rate through again): kept in memory, which costs the server no disk write.
_KV_IN_MEMORY = frozenset({KV_NOTIFIER_RATES})


async def key_value(js: JetStreamContext, bucket: str, history: int = 1) -> KeyValue:
    """Create-or-bind a KV bucket."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=history,
                ttl=_KV_TTL_SECONDS.get(bucket),
                storage=StorageType.MEMORY if bucket in _KV_IN_MEMORY else StorageType.FILE,
                replicas=replicas(),
            )
        )


async def object_store(js: JetStreamContext, bucket: str) -> ObjectStore:
    """Create-or-bind an object store bucket."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_object_store(
            bucket,
            ObjectStoreConfig(bucket=bucket, storage=StorageType.FILE, replicas=replicas()),
        )
