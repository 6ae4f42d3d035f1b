"""Where the SDK keeps what it must remember between runs.

One directory per hospital installation holds the token cache, the pinned
operator key, downloaded breach filters, the breach versions seen, the
record of submitted notices, the watch cursor and watch results, and the
audit of what was refused.
Its contents are as sensitive as the patient list (the token cache is what a
hospital would re-derive matches from), so it is created owner-only.

Default: ``$XDG_STATE_HOME/breachmatch`` (``~/.local/state/breachmatch``), or
``./.breachmatch`` when there is no home directory (a service account).

The cache key is *not* kept here. The token cache's index is an HMAC under a
subkey of it; whoever holds both the cache and the key can test every CPR
number against the index in about 30 core-minutes. A state directory gets
copied — backups, a support bundle, a migrated VM — so the key lives
elsewhere: by default ``$XDG_CONFIG_HOME/breachmatch/cache.key``
(``~/.config/breachmatch/cache.key``), and a key configured inside the state
directory is refused with what to do instead (`StateDir.cache_key_path`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from breachmatch.client.errors import ConfigurationError


def default_cache_key() -> Path | None:
    """``$XDG_CONFIG_HOME/breachmatch/cache.key``; None when there is no home directory."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "breachmatch" / "cache.key"
    try:
        return Path.home() / ".config" / "breachmatch" / "cache.key"
    except RuntimeError:  # no HOME and no passwd entry
        return None


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
    def row_memo(self) -> Path:
        """What each export row gave the last check (`breachmatch.client.row_memo`)."""
        return self.root / "row-memo.sqlite"

    def cache_key_path(self, configured: Path | None) -> Path:
        """The cache key file: `configured` or the default, refused inside this directory."""
        path = configured or default_cache_key()
        if path is None:
            raise ConfigurationError(
                "there is no home directory for the default cache key "
                "(~/.config/breachmatch/cache.key): pass --cache-key FILE (or set "
                f"BREACHMATCH_CACHE_KEY) with a path outside the state directory {self.root}"
            )
        if path.resolve().is_relative_to(self.root.resolve()):
            default = default_cache_key()
            outside = (
                default
                if default is not None and not default.resolve().is_relative_to(self.root.resolve())
                else None
            )
            move = (
                f"move it (mv {path} {outside}) and pass --cache-key {outside}"
                if outside is not None
                else "move it to a path outside the state directory and pass --cache-key FILE"
            )
            raise ConfigurationError(
                f"the cache key {path} is inside the state directory {self.root}: a copy or "
                "backup of the state directory would then hold the key together with the token "
                "cache it protects, and the two let anyone test CPR numbers against the cache. "
                f"Keep the key elsewhere: {move} (or set BREACHMATCH_CACHE_KEY)"
            )
        return path

    @property
    def breach_versions(self) -> Path:
        return self.root / "breach-versions.json"

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
