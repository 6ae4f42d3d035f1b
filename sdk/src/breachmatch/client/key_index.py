"""The distinct match keys of a patient set, held as arrays, and whose keys each one is.

A check needs, per distinct OPRF input, its place in the token cache (the
keyed index, `TokenCache.index_of`) and the patients that have it; the
input itself only if its token must be evaluated. Held as numpy arrays
rather than a list of owners per input, a set of 520,000 keys is built in a
fraction of a second, and the per-patient work of a check (`owners_of`) is
done only for the few keys a filter matched.

An input is unknown when it comes from the row memo (`row_memo`), which
keeps the index of a key, never the key: asking for it raises
`StaleMemoError`, and the check reads the export afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
from numpy.typing import NDArray

from breachmatch.client.collector import collector_paused
from breachmatch.client.errors import StaleMemoError
from breachmatch.client.patients import PatientSet
from breachmatch.identifiers import KeyKind, Strength

#: Kind ↔ its number in the arrays (and in the row memo, so never reorder).
KINDS: tuple[KeyKind, ...] = tuple(KeyKind)
KIND_NUMBER: dict[KeyKind, int] = {kind: number for number, kind in enumerate(KINDS)}

#: Keyed index values of OPRF inputs, as `TokenCache.index_of` computes them.
Hasher = Callable[[Sequence[bytes]], NDArray[np.uint64]]


class KnownInputs(Sequence[bytes]):
    """The OPRF input of each distinct key, where it is known (see the module docstring)."""

    def __init__(self, count: int, known: dict[int, bytes]) -> None:
        self._count = count
        self._known = known

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, at: int) -> bytes: ...

    @overload
    def __getitem__(self, at: slice) -> Sequence[bytes]: ...

    def __getitem__(self, at: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(at, slice):
            return [self[i] for i in range(*at.indices(self._count))]
        if not -self._count <= at < self._count:
            raise IndexError(at)
        try:
            return self._known[at % self._count]
        except KeyError:
            raise StaleMemoError(
                "a remembered match key has no cached token; the export is read afresh"
            ) from None

    def __iter__(self) -> Iterator[bytes]:
        return (self[at] for at in range(self._count))


@dataclass(frozen=True)
class KeyIndex:
    """Distinct keys in the order of their index; owners grouped per key."""

    #: (m, 2) keyed index of each distinct key, sorted.
    index: NDArray[np.uint64]
    inputs: KnownInputs
    #: Per distinct key, the position of its first (patient, key) pair: the patients'
    #: own order of keys, where a choice among keys must not depend on the index.
    first: NDArray[np.intp]
    _start: NDArray[np.intp]
    _patient: NDArray[np.intp]
    _kind: NDArray[np.uint8]

    @property
    def count(self) -> int:
        return len(self.index)

    @classmethod
    def build(
        cls,
        patient: NDArray[np.intp],
        kind: NDArray[np.uint8],
        index: NDArray[np.uint64],
        inputs: dict[int, bytes],
    ) -> KeyIndex:
        """From one row per (patient, key): its patient number, kind, index, and known inputs.

        ``inputs`` maps a pair's position to its OPRF input, where known.
        Keys are distinct by their 128-bit index: equal inputs have equal
        indexes, and unequal ones collide with probability about 2^-128.
        Sorting by the first index word alone is enough unless two pairs
        share it with different second words (about 2^-64 per pair), which
        takes a sort on both.
        """
        order = np.argsort(index[:, 0])
        ordered = index[order]
        same_first = ordered[1:, 0] == ordered[:-1, 0]
        if np.any(same_first & (ordered[1:, 1] != ordered[:-1, 1])):
            order = np.lexsort((index[:, 1], index[:, 0]))
            ordered = index[order]
            same_first = ordered[1:, 0] == ordered[:-1, 0]
        new = np.ones(len(order), dtype=np.bool_)
        new[1:] = ~same_first | (ordered[1:, 1] != ordered[:-1, 1])
        starts = np.flatnonzero(new)
        distinct_of = np.empty(len(order), dtype=np.intp)
        distinct_of[order] = np.cumsum(new) - 1
        known = {int(distinct_of[at]): data for at, data in inputs.items()}
        first = np.minimum.reduceat(order, starts) if len(order) else order
        return cls(
            np.ascontiguousarray(ordered[starts]),
            KnownInputs(len(starts), known),
            first,
            np.append(starts, len(order)),
            patient[order],
            kind[order],
        )

    def owner_pairs(
        self, keys: NDArray[np.intp]
    ) -> tuple[NDArray[np.intp], NDArray[np.uint8], NDArray[np.intp]]:
        """(patient, kind, position in `keys`) of every owner of the distinct keys `keys`."""
        starts = self._start[keys]
        counts = self._start[keys + 1] - starts
        which = np.repeat(np.arange(len(keys)), counts)
        at = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        return self._patient[at], self._kind[at], which

    def owners_of(self, at: int) -> list[tuple[int, KeyKind, Strength]]:
        """(patient number, key kind, key strength) of every patient with distinct key `at`."""
        part = slice(int(self._start[at]), int(self._start[at + 1]))
        return [
            (patient, KINDS[kind], KINDS[kind].strength)
            for patient, kind in zip(
                self._patient[part].tolist(), self._kind[part].tolist(), strict=True
            )
        ]


@dataclass(frozen=True)
class PatientKeys:
    """What a check needs of an export: patients by number, their keys, and the counts."""

    path: Path
    #: Patient id of each patient number (``row-<n>`` for rows without one).
    ids: Sequence[str]
    keys: KeyIndex
    bad_rows: int
    without_keys: int
    #: Patients named ``row-<n>`` because the export has no patient id for them.
    unnamed: int = 0
    #: FHIR Patients with identifiers in systems no rule recognises, per system.
    unknown_identifier_systems: dict[str, int] = field(default_factory=dict)


def patient_keys(patients: PatientSet, hasher: Hasher) -> PatientKeys:
    """The keys of patients read and normalised in full: every input is known."""
    number: list[int] = []
    kind: list[int] = []
    inputs: list[bytes] = []
    with collector_paused():
        for at, patient in enumerate(patients.patients):
            for key in patient.keys:
                number.append(at)
                kind.append(KIND_NUMBER[key.kind])
                inputs.append(key.oprf_input())
    index = KeyIndex.build(
        np.array(number, dtype=np.intp),
        np.array(kind, dtype=np.uint8),
        hasher(inputs) if inputs else np.zeros((0, 2), dtype=np.uint64),
        dict(enumerate(inputs)),
    )
    return PatientKeys(
        patients.path,
        [patient.patient_id for patient in patients.patients],
        index,
        patients.bad_rows,
        patients.without_keys,
        patients.unnamed,
        patients.unknown_identifier_systems,
    )
