"""How a refused batch tells the client what it may still send.

RESOURCE_EXHAUSTED alone would leave a client guessing, so the status carries
the numbers twice: for people in the message, and for programs as trailing
metadata (``breachmatch-budget-remaining``, ``-limit``, ``-resets-at``) that
any gRPC client reads without extra protos (`grpc.aio.AioRpcError.trailing_metadata`).
A client that sends exactly the remaining allowance next is granted it.
"""

from __future__ import annotations

from breachmatch_matcher.budget import BudgetDecision

REMAINING_KEY = "breachmatch-budget-remaining"
LIMIT_KEY = "breachmatch-budget-limit"
RESETS_AT_KEY = "breachmatch-budget-resets-at"


def budget_exhausted(
    batch_size: int, decision: BudgetDecision
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The message and trailing metadata for RESOURCE_EXHAUSTED on a refused batch."""
    resets_at = decision.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    message = (
        f"daily evaluation budget exhausted: batch of {batch_size} elements refused, "
        f"{decision.remaining} of {decision.limit} remain until {resets_at}"
    )
    trailers = (
        (REMAINING_KEY, str(decision.remaining)),
        (LIMIT_KEY, str(decision.limit)),
        (RESETS_AT_KEY, resets_at),
    )
    return message, trailers
