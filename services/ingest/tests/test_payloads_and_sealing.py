"""Work-queue payloads: exact round trips, bound to their chunk, sealed under the OPRF key."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from breachmatch import oprf
from breachmatch.filter import derive_keys
from breachmatch_ingest.payloads import (
    ChunkId,
    ChunkResult,
    PayloadError,
    decode_chunk,
    decode_result,
    encode_chunk,
    encode_result,
)
from breachmatch_ingest.sealing import QueueCipher, SealError, queue_key
from breachmatch_ingest.worker import evaluate_chunk

CHUNK = ChunkId("0123456789abcdef0123456789abcdef", 2, 17)

pairs = st.lists(
    st.tuples(st.binary(max_size=300), st.integers(min_value=0, max_value=127)), max_size=40
)


@given(pairs)
def test_chunks_round_trip_exactly(items: list[tuple[bytes, int]]) -> None:
    inputs = [data for data, _ in items]
    labels = bytes(label for _, label in items)
    assert decode_chunk(CHUNK, encode_chunk(CHUNK, inputs, labels)) == (inputs, labels)


@given(pairs, st.data())
def test_a_cut_or_moved_chunk_is_refused(
    items: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    payload = encode_chunk(CHUNK, [d for d, _ in items], bytes(label for _, label in items))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(PayloadError):
        decode_chunk(CHUNK, payload[:cut])
    for other in (
        ChunkId(CHUNK.job_id, CHUNK.attempt, CHUNK.index + 1),
        ChunkId(CHUNK.job_id, CHUNK.attempt + 1, CHUNK.index),
        ChunkId("f" * 32, CHUNK.attempt, CHUNK.index),
    ):
        with pytest.raises(PayloadError):
            decode_chunk(other, payload)


def test_results_round_trip_and_are_bound_to_their_chunk() -> None:
    keys = derive_keys([os.urandom(oprf.OUTPUT_SIZE) for _ in range(50)])
    labels = np.arange(50, dtype=np.uint8) % 128
    payload = encode_result(CHUNK, ChunkResult(keys, labels))
    back = decode_result(CHUNK, payload)
    assert np.array_equal(back.keys.tag_hash, keys.tag_hash)
    assert np.array_equal(back.keys.pad, keys.pad)
    assert np.array_equal(back.labels, labels)
    with pytest.raises(PayloadError):
        decode_result(ChunkId(CHUNK.job_id, CHUNK.attempt, 0), payload)
    with pytest.raises(PayloadError):
        decode_result(CHUNK, payload[:-1])


def test_sealing_needs_the_same_oprf_secret_and_hides_the_plaintext() -> None:
    secret, other = oprf.random_key_pair()[0], oprf.random_key_pair()[0]
    assert queue_key(secret) != queue_key(other)
    assert len(queue_key(secret)) == 32
    plaintext = encode_chunk(CHUNK, [b"breachmatch:v1:cpr:0101901234"], b"\x03")
    sealed = QueueCipher(secret).seal(plaintext)
    assert b"0101901234" not in sealed
    assert QueueCipher(secret).seal(plaintext) != sealed  # a fresh nonce every time
    assert QueueCipher(secret).open(sealed) == plaintext
    with pytest.raises(SealError):
        QueueCipher(other).open(sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        QueueCipher(secret).open(bytes(tampered))


def test_a_worker_evaluation_equals_the_oprf_and_filter_keys_of_each_input() -> None:
    secret = oprf.random_key_pair()[0]
    inputs = [f"breachmatch:v1:email:p{i}@example.dk".encode() for i in range(30)]
    labels = bytes(i % 128 for i in range(30))
    cipher = QueueCipher(secret)
    sealed = cipher.seal(encode_chunk(CHUNK, inputs, labels))
    result = decode_result(CHUNK, cipher.open(evaluate_chunk(secret, CHUNK, sealed)))
    expected = derive_keys([oprf.evaluate(secret, data) for data in inputs])
    assert np.array_equal(result.keys.tag_hash, expected.tag_hash)
    assert np.array_equal(result.keys.pad, expected.pad)
    assert result.labels.tobytes() == labels
