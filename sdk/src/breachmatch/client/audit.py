"""The hospital's own record of what the SDK refused from a service, and why.

A matcher that serves an unsigned key or an evaluation it cannot prove is
either misconfigured or hostile; either way the hospital's security officer
should be able to see it later, not only whoever watched the run's output.
Each refusal is one JSON line appended to ``audit.jsonl`` in the state
directory (owner-only, like everything there) and one warning in the log.
Lines hold key ids, addresses, counts and reasons — never an identifier.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from breachmatch import logs

log = logs.get_logger(__name__)


class SecurityAudit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, event: str, **fields: str | int) -> None:
        line = {"at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "event": event, **fields}
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
        log.warning(event, **fields)

    def events(self) -> list[dict[str, str | int]]:
        """Every recorded line, oldest first (for tests and a security officer's tooling)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]
