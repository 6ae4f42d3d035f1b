"""One base for the SDK's objects that hold a resource until `close()`.

Files, memory maps, SQLite connections and gRPC channels are released by
each class's own `close()`; `with` blocks only need that called on the way
out, exceptions or not. Written once here rather than as the same
``__enter__``/``__exit__`` pair in every such class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closeable(ABC):
    """A resource holder usable as ``with holder: ...``, closed on exit."""

    __slots__ = ()

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds; called once by `__exit__`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
