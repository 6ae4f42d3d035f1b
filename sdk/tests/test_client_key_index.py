"""Distinct keys as arrays: grouping by the full 128-bit index, owners, unknown inputs."""

from __future__ import annotations

import numpy as np
import pytest

from breachmatch.client.errors import StaleMemoError
from breachmatch.client.key_index import KIND_NUMBER, KeyIndex
from breachmatch.identifiers import KeyKind, Strength


def _build(index: list[list[int]], patients: list[int], inputs: dict[int, bytes]) -> KeyIndex:
    kinds = [KIND_NUMBER[KeyKind.EMAIL if p % 2 else KeyKind.CPR] for p in patients]
    return KeyIndex.build(
        np.array(patients, dtype=np.intp),
        np.array(kinds, dtype=np.uint8),
        np.array(index, dtype=np.uint64),
        inputs,
    )


def test_keys_sharing_a_first_word_are_told_apart_by_the_second():
    """The 2^-64 case: equal first words, different second words, interleaved."""
    index = _build([[5, 1], [5, 2], [5, 1], [3, 9]], [0, 1, 2, 3], {1: b"b", 3: b"d"})
    assert index.count == 3
    assert index.index.tolist() == [[3, 9], [5, 1], [5, 2]]
    assert sorted(index.owners_of(1)) == [
        (0, KeyKind.CPR, Strength.STRONG),
        (2, KeyKind.CPR, Strength.STRONG),
    ]
    assert index.owners_of(2) == [(1, KeyKind.EMAIL, Strength.MEDIUM)]
    assert index.first.tolist() == [3, 0, 1]  # each key's first pair, in the patients' order
    assert index.inputs[0] == b"d"
    assert index.inputs[2] == b"b"


def test_owner_pairs_gather_the_owners_of_many_keys_at_once():
    index = _build([[1, 1], [2, 2], [1, 1], [3, 3], [1, 1]], [0, 1, 2, 3, 4], {})
    patient, kind, which = index.owner_pairs(np.array([2, 0], dtype=np.intp))
    assert sorted(zip(which.tolist(), patient.tolist(), strict=True)) == [
        (0, 3),
        (1, 0),
        (1, 2),
        (1, 4),
    ]
    assert kind.tolist() == [KIND_NUMBER[KeyKind.EMAIL if p % 2 else KeyKind.CPR] for p in patient]


def test_an_input_that_is_not_known_asks_for_a_fresh_read():
    index = _build([[1, 1], [2, 2]], [0, 1], {0: b"known"})
    assert index.inputs[0] == b"known"
    with pytest.raises(StaleMemoError):
        index.inputs[1]
    with pytest.raises(IndexError):
        index.inputs[2]


def test_no_keys_at_all_is_an_empty_index():
    index = KeyIndex.build(
        np.zeros(0, np.intp), np.zeros(0, np.uint8), np.zeros((0, 2), np.uint64), {}
    )
    assert index.count == 0
    assert len(index.inputs) == 0
    patient, _, _ = index.owner_pairs(np.zeros(0, dtype=np.intp))
    assert len(patient) == 0
