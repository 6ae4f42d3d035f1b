"""How big a filter is per entry and how often it matches a stranger.

The benchmark prints these next to OpenMined PSI's GCS at the same
false-positive rate; the figures come from the manifest (or the writer's
summary), so they describe the published artifact, not an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from breachmatch.filter.tags import false_match_bound

_LABEL_BYTES = 1


class SizedBody(Protocol):
    """A `Manifest` or a `BodySummary`."""

    @property
    def entry_count(self) -> int: ...

    @property
    def body_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FilterStats:
    entry_count: int
    body_size: int
    #: Whole body per entry (header and block index included), inf when empty.
    bytes_per_entry: float
    #: The same without the one label byte per entry: what GCS compares to.
    tag_bytes_per_entry: float
    #: Upper bound on P(a token not in the breach matches), per queried token.
    false_match_probability: float

    @property
    def false_match_log2(self) -> float:
        p = self.false_match_probability
        return math.log2(p) if p > 0 else -math.inf


def filter_stats(body: SizedBody) -> FilterStats:
    n = body.entry_count
    per_entry = body.body_size / n if n else math.inf
    return FilterStats(
        entry_count=n,
        body_size=body.body_size,
        bytes_per_entry=per_entry,
        tag_bytes_per_entry=per_entry - _LABEL_BYTES if n else math.inf,
        false_match_probability=false_match_bound(n),
    )
