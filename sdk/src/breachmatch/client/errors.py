"""What can go wrong on the hospital's side, each with what to do about it.

A hospital runs the CLI unattended (cron, a watch service) and reads its
output later, so an error message has to stand on its own: it says what
happened, where (an address, a file, a flag) and what to fix. None of them
ever quotes a patient value; they name files, flags, headers and counts.
The CLI prints ``str(error)`` of any `ClientError` and exits non-zero.
"""

from __future__ import annotations


class ClientError(Exception):
    """A failure the operator of the SDK can act on; the message says how."""


class ConfigurationError(ClientError):
    """A flag, a key file or the state directory cannot be used as given."""


class PatientsFileError(ClientError):
    """The patient export cannot be read, or yields no match key at all."""


class TlsSetupError(ClientError):
    """The client certificate, its key or the CA file is missing or unusable."""


class ServiceUnavailableError(ClientError):
    """The matcher or notifier could not be reached, even after retries."""


class RpcFailedError(ClientError):
    """A service answered with an error that retrying will not fix."""


class BudgetExhaustedError(ClientError):
    """The tenant's daily evaluation budget does not cover the next batch."""

    def __init__(self, message: str, remaining: int | None) -> None:
        super().__init__(message)
        self.remaining = remaining


class KeyRetiredError(ClientError):
    """The matcher no longer evaluates under the OPRF key id we asked for."""


class BreachNotServedError(ClientError):
    """A breach id the matcher does not (or no longer) serve."""


class ArtifactRefusedError(ClientError):
    """A breach artifact failed verification (signature, size, digest or key id)."""


class OperatorKeyChangedError(ArtifactRefusedError):
    """The matcher's operator key differs from the pinned one."""


class UntrustedKeyError(ArtifactRefusedError):
    """A public key the matcher served is not stated by the pinned operator key."""


class UnverifiableEvaluationError(ClientError):
    """The matcher's proof for an evaluated batch did not verify; nothing of it was kept."""


class CacheKeyMismatchError(ClientError):
    """The token cache was written under a different cache key."""


class StaleMemoError(ClientError):
    """A key remembered by the row memo has no cached token: the export must be read afresh."""
