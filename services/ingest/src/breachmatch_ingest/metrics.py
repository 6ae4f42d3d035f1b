"""Prometheus metrics of the ingest service and workers (scraped on the metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CHUNKS = Counter(
    "breachmatch_ingest_chunks_total",
    "Work-queue chunks handled by this worker, by outcome",
    ["outcome"],
)
ROWS = Counter("breachmatch_ingest_rows_total", "Dump rows read by coordinators in this process")
JOBS = Counter(
    "breachmatch_ingest_jobs_total", "Ingest jobs finished in this process, by state", ["state"]
)
RUNNING_JOBS = Gauge("breachmatch_ingest_running_jobs", "Ingest jobs coordinated right now")
