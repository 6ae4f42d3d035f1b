"""Ingest failures whose messages are safe to log, store and show.

Exceptions from parsers and libraries may quote their input, and the input
is patient data. So a failure reaches a log line, the job record or a gRPC
status only through `describe`: the message of the exception types listed
here (written by us, never holding a value from the dump), else only the
exception's type and where it was raised.
"""

from __future__ import annotations

from breachmatch.columns import MappingError
from breachmatch.filter import RetractionFormatError
from breachmatch.keys import KeyRingError
from breachmatch.logs import describe_unexpected
from breachmatch.readers.items import ReaderError
from breachmatch_ingest.metadata import MetadataError
from breachmatch_ingest.publish import (
    BreachRetractedError,
    PublishContentionError,
    UnknownBreachError,
)


class ConfigError(ValueError):
    """A required setting is missing or a value is unusable; the message names the flag."""


class IngestError(RuntimeError):
    """A job cannot complete; the message says why in words an operator can act on."""


class JobStalledError(IngestError):
    pass


class ChunkFailedError(IngestError):
    pass


class NoKeysError(IngestError):
    pass


class UploadAbortedError(IngestError):
    """The upload ended without its last byte (the client went away).

    Deliberately not an `OSError`: the readers treat an OSError while reading
    as a damaged file that simply ends there, and an aborted upload must fail
    the job, not publish a filter of the part that arrived.
    """


_SAFE_MESSAGES: tuple[type[BaseException], ...] = (
    ConfigError,
    IngestError,
    KeyRingError,
    MetadataError,
    MappingError,
    ReaderError,
    BreachRetractedError,
    PublishContentionError,
    UnknownBreachError,
    RetractionFormatError,
)


def describe(error: BaseException) -> str:
    """A one-line description of `error` that cannot contain dump content."""
    if isinstance(error, _SAFE_MESSAGES):
        return str(error)
    return describe_unexpected(error)
