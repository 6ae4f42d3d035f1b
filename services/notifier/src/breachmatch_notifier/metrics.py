"""Prometheus metrics of the notifier, served by `breachmatch.server.Service`.

Labels are channel names, tenant ids (hospital certificate names from the
operator's tenants file) and fixed reason codes from this package — never
anything a request carries, and never a contact detail.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OUTREACH_SUBMITTED = Counter(
    "breachmatch_notifier_outreach_submitted_total",
    "Outreach items submitted, by tenant and outcome (accepted, duplicate, refusal_<reason>)",
    ["tenant", "outcome"],
)
NOTICES_SENT = Counter(
    "breachmatch_notifier_notices_sent_total",
    "Notices delivered, by channel",
    ["channel"],
)
CHANNEL_FAILURES = Counter(
    "breachmatch_notifier_channel_failures_total",
    "Permanent failures of one channel for one notice (the next channel is tried), by channel",
    ["channel"],
)
TRANSIENT_FAILURES = Counter(
    "breachmatch_notifier_transient_failures_total",
    "Deliveries put back for a retry after a transient failure, by channel",
    ["channel"],
)
DEAD_LETTERS = Counter(
    "breachmatch_notifier_dead_letters_total",
    "Requests given up on and dead-lettered, by reason",
    ["reason"],
)
HELD = Counter(
    "breachmatch_notifier_held_total",
    "Notices held for operator review because their outcome is unknown, by channel",
    ["channel"],
)
SKIPPED = Counter(
    "breachmatch_notifier_skipped_total",
    "Requests not sent because their breach was retracted",
)
QUEUE_DEPTH = Gauge(
    "breachmatch_notifier_queue_depth",
    "Outreach requests waiting or being delivered (consumer pending + unacknowledged)",
)
BREACH_ALERTS = Counter(
    "breachmatch_notifier_breach_alerts_total",
    "New-breach alerts to tenants, by outcome (sent, failed, retry, held)",
    ["outcome"],
)
BREACH_EVENTS_REJECTED = Counter(
    "breachmatch_notifier_breach_events_rejected_total",
    "Events on stream BREACHES that were not used, by reason",
    ["reason"],
)
