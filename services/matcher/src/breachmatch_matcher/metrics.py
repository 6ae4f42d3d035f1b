"""Prometheus metrics of the matcher, served by `breachmatch.server.Service`.

Tenant labels are the tenant ids of hospital certificates (a bounded, operator
-configured set), never anything a client sends in a message body; reasons are
fixed strings from this package.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVALUATE_BATCHES = Counter(
    "breachmatch_matcher_evaluate_batches_total",
    "Evaluate batches answered, by tenant",
    ["tenant"],
)
EVALUATED_ELEMENTS = Counter(
    "breachmatch_matcher_evaluated_elements_total",
    "Blinded elements evaluated, by tenant",
    ["tenant"],
)
BATCH_SECONDS = Histogram(
    "breachmatch_matcher_evaluate_batch_seconds",
    "Wall time to evaluate one batch (after validation and budget)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BUDGET_REJECTIONS = Counter(
    "breachmatch_matcher_budget_rejections_total",
    "Evaluate batches refused because the tenant's daily budget is spent",
    ["tenant"],
)
INVALID_REQUESTS = Counter(
    "breachmatch_matcher_invalid_requests_total",
    "Requests refused as malformed or not allowed, by reason",
    ["reason"],
)
BREACH_EVENTS_REJECTED = Counter(
    "breachmatch_matcher_breach_events_rejected_total",
    "Events on stream BREACHES that were not served, by reason",
    ["reason"],
)
BREACHES_SERVED = Gauge(
    "breachmatch_matcher_breaches_served",
    "Breaches currently listed (published and not retracted)",
)
BUDGET_LIMIT = Gauge(
    "breachmatch_matcher_budget_limit",
    "Daily evaluation budget of a tenant (tenants file)",
    ["tenant"],
)
BUDGET_REMAINING = Gauge(
    "breachmatch_matcher_budget_remaining",
    "Elements the tenant may still have evaluated today, as of this replica's last charge",
    ["tenant"],
)
BUDGET_RESERVED = Gauge(
    "breachmatch_matcher_budget_reserved",
    "Budget this replica has reserved from the shared count and not used yet",
    ["tenant"],
)
AUDIT_PUBLISH_FAILURES = Counter(
    "breachmatch_matcher_audit_publish_failures_total",
    "Evaluation audit events that could not be published to NATS",
)
