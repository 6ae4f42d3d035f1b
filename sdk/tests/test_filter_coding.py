"""breachmatch.filter building blocks: tag derivation, bucket mapping, Rice coding."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breachmatch.filter import FilterFormatError, derive_keys, false_match_bound
from breachmatch.filter.golomb import decode_sorted, encode_sorted
from breachmatch.filter.tags import MAX_ENTRIES, bucket_of

OUTPUT = bytes(range(64))


def test_tag_hash_and_pad_are_domain_separated_blake2b():
    keys = derive_keys([OUTPUT])
    tag = hashlib.blake2b(OUTPUT, digest_size=16, person=b"bm.filter.tag.v1").digest()
    pad = hashlib.blake2b(OUTPUT, digest_size=1, person=b"bm.filter.pad.v1").digest()
    assert keys.tag_hash.tolist() == [
        [int.from_bytes(tag[:8], "little"), int.from_bytes(tag[8:], "little")]
    ]
    assert keys.pad.tolist() == [pad[0]]


def test_list_and_array_inputs_derive_the_same_keys():
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, size=(1000, 64), dtype=np.uint8)
    from_array = derive_keys(array)
    from_list = derive_keys([row.tobytes() for row in array])
    assert np.array_equal(from_array.tag_hash, from_list.tag_hash)
    assert np.array_equal(from_array.pad, from_list.pad)
    assert len(from_array) == 1000


def test_a_wrong_length_output_is_named_by_index_not_value():
    secretish = b"0101901234" * 6 + b"abc"
    with pytest.raises(ValueError, match="#1 ") as info:
        derive_keys([OUTPUT, secretish])
    assert "0101901234" not in str(info.value)


def test_outputs_array_must_have_the_output_shape():
    with pytest.raises(ValueError, match="shape"):
        derive_keys(np.zeros((3, 32), dtype=np.uint8))


@pytest.mark.parametrize("entry_count", [1, 2, 3, 1000, (1 << 24) + 1, 30_000_000, MAX_ENTRIES])
def test_bucket_of_is_the_exact_multiply_high(entry_count):
    rng = np.random.default_rng(entry_count)
    wide = np.concatenate(
        [
            rng.integers(0, 1 << 64, size=2000, dtype=np.uint64),
            np.array([0, 1, (1 << 32) - 1, 1 << 32, (1 << 64) - 1], dtype=np.uint64),
        ]
    )
    expected = [(int(w) * entry_count) >> 64 for w in wide]
    assert bucket_of(wide, entry_count).tolist() == expected
    assert int(bucket_of(wide, entry_count).max()) < entry_count


def test_bucket_of_refuses_more_than_two_to_the_32_entries():
    with pytest.raises(ValueError, match="entry_count"):
        bucket_of(np.zeros(1, dtype=np.uint64), MAX_ENTRIES + 1)


def test_false_match_bound_is_two_to_the_minus_40():
    assert false_match_bound(0) == 0.0
    assert false_match_bound(1) == 2.0**-40
    for n in (3, 30_000_000, MAX_ENTRIES):
        assert 2.0**-40 <= false_match_bound(n) <= 2.0**-40 * (1 + 2.0**-31)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=(1 << 56) - 1), max_size=300),
)
def test_rice_coding_round_trips(values):
    ordered = np.array(sorted(values), dtype=np.uint64)
    unary, remainders = encode_sorted(ordered)
    decoded = decode_sorted(unary, remainders, len(ordered), 1 << 56)
    assert decoded.tolist() == ordered.tolist()


def test_rice_coding_costs_about_41_6_bits_per_uniform_tag():
    rng = np.random.default_rng(5)
    count = 50_000
    tags = np.sort(rng.integers(0, count << 40, size=count, dtype=np.uint64))
    unary, remainders = encode_sorted(tags)
    bits = 8 * (len(unary) + len(remainders)) / count
    assert 41.4 < bits < 41.7


def _encoded_block():
    tags = np.array([5, 1 << 41, (1 << 41) + 7, 3 << 42], dtype=np.uint64)
    return tags, *encode_sorted(tags)


def test_decode_rejects_a_wrong_entry_count():
    tags, unary, remainders = _encoded_block()
    with pytest.raises(FilterFormatError, match="number of entries"):
        decode_sorted(unary, remainders[:-5], len(tags) - 1, 1 << 56)


def test_decode_rejects_trailing_unary_bytes():
    tags, unary, remainders = _encoded_block()
    with pytest.raises(FilterFormatError, match="trailing"):
        decode_sorted(unary + b"\x00", remainders, len(tags), 1 << 56)


def test_decode_rejects_tags_beyond_the_block():
    tags, unary, remainders = _encoded_block()
    with pytest.raises(FilterFormatError, match="range"):
        decode_sorted(unary, remainders, len(tags), int(tags[-1]))
