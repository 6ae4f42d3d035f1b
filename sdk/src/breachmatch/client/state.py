"""Where the SDK keeps what it must remember between runs.

One directory per hospital installation holds the token cache, the pinned
operator key, downloaded breach filters, the record of submitted notices,
the watch cursor and watch results, and the audit of what was refused.
Its contents are as sensitive as the patient list (the token cache is what a
hospital would re-derive matches from), so it is created owner-only.

Default: ``$XDG_STATE_HOME/breachmatch`` (``~/.local/state/breachmatch``), or
``./.breachmatch`` when there is no home directory (a service account).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from breachmatch.client.errors import ConfigurationError


def default_state_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "breachmatch"
    try:
        return Path.home() / ".local" / "state" / "breachmatch"
    except RuntimeError:  # no HOME and no passwd entry
        return Path(".breachmatch")


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def open(cls, root: Path) -> StateDir:
        """Create the directory (owner-only) if needed, or explain why it cannot be used."""
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the state directory {root} ({exc.strerror}); "
                "choose another with --state-dir"
            ) from exc
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigurationError(
                f"the state directory {root} is not writable; choose another with --state-dir"
            )
        return cls(root)

    @property
    def token_cache(self) -> Path:
        return self.root / "tokens.sqlite"

    @property
    def default_cache_key(self) -> Path:
        return self.root / "cache.key"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def operator_pin(self) -> Path:
        return self.root / "operator-key.pin"

    @property
    def breaches(self) -> Path:
        return self.root / "breaches"

    @property
    def submitted_notices(self) -> Path:
        return self.root / "submitted.sqlite"

    @property
    def watch_cursor(self) -> Path:
        return self.root / "watch.sequence"

    @property
    def watch_results(self) -> Path:
        return self.root / "results"
