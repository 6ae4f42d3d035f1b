"""The hospital side of breachmatch: check patients against breaches, notify, watch.

`Client` is the Python API; ``breachmatch`` (``breachmatch.cli``) is the same
thing on the command line. Module map:

* `api` — `Client`, one method per command
* `patients` — reading the export; `check` — the matching; `results` — what it found
* `tokens`, `evaluate`, `cache`, `cache_key` — OPRF outputs: cached, else pipelined
  through the matcher, encrypted at rest
* `breaches`, `pinning`, `versions` — downloading and verifying breach filters, and
  refusing versions older than the newest seen
* `matcher`, `connection`, `retry` — gRPC calls, mTLS, errors, backoff
* `report` — terminal table, JSON and CSV; `outreach` — sealed notices; `watch`
* `state` — the state directory; `errors` — what can go wrong, and what to do
"""

from breachmatch.client.api import Client, NotifyResult, PatientSource
from breachmatch.client.errors import ClientError
from breachmatch.client.evaluate import PipelineOptions
from breachmatch.client.results import BreachSummary, CheckResult, Match
from breachmatch.client.retry import Backoff

__all__ = [
    "Backoff",
    "BreachSummary",
    "CheckResult",
    "Client",
    "ClientError",
    "Match",
    "NotifyResult",
    "PatientSource",
    "PipelineOptions",
]
