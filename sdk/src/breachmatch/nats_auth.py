"""NATS users and what each may publish and subscribe: the bus's half of zero trust.

nats-server authenticates every client by its certificate (TLS with
``verify_and_map``: the certificate's URI SAN, ``spiffe://breachmatch/service/
<name>``, *is* the NATS user name — checked against nats-server 2.15, which
maps URI SANs), so there are no passwords to leak and no anonymous clients.
Each service user may touch only its own job:

* **ingest** (the service, its workers and the operator's ``breachmatch-ingest``
  CLI, all with the ingest certificate) publishes breach events and filter
  bodies and owns its work queue and job records;
* **matcher** reads breach events and filter bodies, keeps the evaluation
  budgets and publishes the audit trail;
* **notifier** reads breach events and filter bodies with their proof indexes
  (to check proofs of match), and alone takes outreach requests from the
  queue and writes the outreach ledger, status events, dead letters and the
  per-channel rate counters its replicas share;
* **backup** (the JetStream backup job, `deploy/components/backup`) takes
  snapshots of the streams worth keeping (`BACKED_UP_STREAMS`) and nothing
  else: no message read through a consumer, no write, purge, delete or restore;
* hospitals and the operator's gRPC identity have no NATS user at all.

Permissions are allow-lists of exact subjects, by JetStream mechanism:
``$JS.API.STREAM.<OP>.<stream>`` for the streams a user owns (create, update,
info, purge), ``$JS.API.CONSUMER.*.<stream>`` plus ``$JS.ACK.<stream>.>`` and
``$JS.FC.<stream>.>`` for the streams it reads (creating a consumer *is*
reading, whatever its deliver subject, so a user without consumer rights on a
stream cannot read it), ``$KV.<bucket>.>`` / ``$O.<bucket>.>`` for the
buckets it writes, and its own subjects. Replies come back on a per-user inbox
prefix (`bus.inbox_prefix`, passed to nats-py as ``inbox_prefix``): each user may
subscribe to its own inbox only, so no user can read another's API replies.

`render_authorization` turns the table into nats-server configuration; the
dev server (`breachmatch_dev.nats_server`) and deploy/base/nats/
authorization.conf are both that output (a test keeps the deploy file in
step). The dev-only `DEV_ADMIN` user may do anything; tests use it to seed and
inspect streams, production has no such user and no certificate for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from breachmatch import bus
from breachmatch.identity import Identity, Role

_API = "$JS.API"


@dataclass(frozen=True)
class NatsUser:
    """One NATS user: a service identity and its publish/subscribe allow-lists."""

    service: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    @property
    def identity(self) -> Identity:
        return Identity(Role.SERVICE, self.service)


# --- permission building blocks ----------------------------------------------


def _own_streams(*streams: str) -> list[str]:
    """Create, update and inspect streams this user owns (see `bus.ensure_owned`).

    Not purge: an owner that may purge could erase, say, its own audit trail;
    only the work queues and the object store (whose writes purge replaced
    chunks) get `_purge`.
    """
    return [f"{_API}.STREAM.{op}.{s}" for s in streams for op in ("CREATE", "UPDATE", "INFO")]


def _purge(*streams: str) -> list[str]:
    return [f"{_API}.STREAM.PURGE.{s}" for s in streams]


def _read_streams(*streams: str) -> list[str]:
    """Inspect and consume streams (ephemeral and durable consumers, pull, ack, flow control)."""
    subjects: list[str] = []
    for s in streams:
        subjects += [
            f"{_API}.STREAM.INFO.{s}",
            f"{_API}.STREAM.MSG.GET.{s}",
            f"{_API}.DIRECT.GET.{s}",
            f"{_API}.DIRECT.GET.{s}.>",
            f"{_API}.CONSUMER.CREATE.{s}",
            f"{_API}.CONSUMER.CREATE.{s}.>",
            f"{_API}.CONSUMER.DURABLE.CREATE.{s}.>",
            f"{_API}.CONSUMER.INFO.{s}.>",
            f"{_API}.CONSUMER.DELETE.{s}.>",
            f"{_API}.CONSUMER.MSG.NEXT.{s}.>",
            f"$JS.ACK.{s}.>",
            f"$JS.FC.{s}.>",
        ]
    return subjects


def _snapshot_streams(*streams: str) -> list[str]:
    """Back up streams (`nats stream backup`): their info, the snapshot, its chunks' acks.

    The server sends a snapshot's chunks to the requester's inbox, each with an
    ack subject under ``$JS.SNAPSHOT.ACK.<stream>.`` for flow control.
    """
    return [
        subject
        for s in streams
        for subject in (
            f"{_API}.STREAM.INFO.{s}",
            f"{_API}.STREAM.SNAPSHOT.{s}",
            f"$JS.SNAPSHOT.ACK.{s}.>",
        )
    ]


def _own_key_value(bucket: str) -> list[str]:
    stream = bus.kv_stream(bucket)
    return [*_own_streams(stream), *_read_streams(stream), f"$KV.{bucket}.>"]


def _own_object_store(bucket: str) -> list[str]:
    stream = bus.object_stream(bucket)
    return [*_own_streams(stream), *_read_streams(stream), *_purge(stream), f"$O.{bucket}.>"]


def _read_object_store(bucket: str) -> list[str]:
    return _read_streams(bus.object_stream(bucket))


#: Every service: look up which stream holds a subject (nats-py does, to bind a
#: subscription or read an object); it answers with stream names only.
_COMMON = [f"{_API}.STREAM.NAMES"]


def _user(service: str, publish: Iterable[str]) -> NatsUser:
    prefix = bus.inbox_prefix(Identity(Role.SERVICE, service))
    return NatsUser(service, tuple(dict.fromkeys([*_COMMON, *publish])), (f"{prefix}.>",))


# --- the users ----------------------------------------------------------------------

INGEST = _user(
    "ingest",
    [
        bus.BREACH_PUBLISHED,
        bus.BREACH_RETRACTED,
        bus.INGEST_CHUNK + ".>",
        bus.INGEST_RESULT + ".>",
        *_own_streams(bus.STREAM_BREACHES, bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS),
        *_read_streams(bus.STREAM_BREACHES, bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS),
        *_purge(bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS),
        *_own_key_value(bus.KV_INGEST_JOBS),
        *_own_object_store(bus.OBJ_BREACH_FILTERS),
    ],
)

MATCHER = _user(
    "matcher",
    [
        bus.AUDIT_EVALUATE + ".>",
        *_own_streams(bus.STREAM_AUDIT),
        *_read_streams(bus.STREAM_BREACHES),
        *_own_key_value(bus.KV_BUDGETS),
        *_read_object_store(bus.OBJ_BREACH_FILTERS),
    ],
)

NOTIFIER = _user(
    "notifier",
    [
        bus.OUTREACH_REQUEST + ".>",
        bus.OUTREACH_STATUS + ".>",
        bus.OUTREACH_DEAD + ".>",
        *_own_streams(bus.STREAM_OUTREACH, bus.STREAM_OUTREACH_STATUS, bus.STREAM_OUTREACH_DEAD),
        *_read_streams(bus.STREAM_OUTREACH, bus.STREAM_OUTREACH_STATUS, bus.STREAM_BREACHES),
        *_own_key_value(bus.KV_OUTREACH_LEDGER),
        # The provider rate limits its replicas share: nobody else may read or move them.
        *_own_key_value(bus.KV_NOTIFIER_RATES),
        # Filter bodies and proof indexes, to check hospitals' proofs of match.
        *_read_object_store(bus.OBJ_BREACH_FILTERS),
    ],
)

#: What a backup keeps, in restore order (deploy/README.md, "Back up JetStream"):
#: breach events before the bodies they point to (ingest stores a body before
#: it publishes the event, so every event backed up has its body in the later
#: object-store snapshot), then the ledger, delivery history and audit trail.
#: Work in flight (queues, job records, a day's budgets) is not worth keeping,
#: and the outreach queue's sealed contact details should not outlive delivery.
BACKED_UP_STREAMS: tuple[str, ...] = (
    bus.STREAM_BREACHES,
    bus.object_stream(bus.OBJ_BREACH_FILTERS),
    bus.kv_stream(bus.KV_OUTREACH_LEDGER),
    bus.STREAM_OUTREACH_STATUS,
    bus.STREAM_OUTREACH_DEAD,
    bus.STREAM_AUDIT,
)

BACKUP = _user("backup", _snapshot_streams(*BACKED_UP_STREAMS))

#: The users of a production deployment (deploy/base/nats/authorization.conf).
PRODUCTION_USERS: tuple[NatsUser, ...] = (INGEST, MATCHER, NOTIFIER, BACKUP)

#: Dev and test only: may publish and subscribe anything (seeding and inspecting
#: streams in tests). Production has no such user and issues no such certificate.
DEV_ADMIN = NatsUser("admin", (">",), (">",))


def render_authorization(users: Sequence[NatsUser]) -> str:
    """The nats-server ``authorization`` block for `users` (one user per certificate URI)."""
    lines = [
        "# Generated by breachmatch.nats_auth.render_authorization: do not edit by hand.",
        "# Users are certificate URI SANs (tls verify_and_map); no other client gets in.",
        "authorization {",
        "  users = [",
    ]
    for user in users:
        lines += [
            "    {",
            f'      user: "{user.identity.uri}"',
            "      permissions: {",
            "        publish: { allow: [",
            *(f'          "{subject}"' for subject in user.publish),
            "        ] }",
            "        subscribe: { allow: [",
            *(f'          "{subject}"' for subject in user.subscribe),
            "        ] }",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def main() -> None:
    """`python -m breachmatch.nats_auth` prints the production authorization block."""
    print(render_authorization(PRODUCTION_USERS), end="")


if __name__ == "__main__":
    main()
