"""The proof index: genuine tokens prove their entry, ground-out tags and tampering do not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from breachmatch.filter import (
    NOT_FOUND,
    BreachFilter,
    FilterFormatError,
    FilterWriter,
    ProofIndex,
    TokenKeys,
    derive_keys,
    proven_labels,
)
from breachmatch.filter.layout import PROOF_HEADER_SIZE, pack_proof_header

from .test_filter import manifest_for, random_outputs

RNG_SEED = 20250612
MEMBERS = 2000


@pytest.fixture(scope="module")
def built() -> tuple[np.ndarray, np.ndarray, BreachFilter, bytes]:
    rng = np.random.default_rng(RNG_SEED)
    outputs = random_outputs(rng, MEMBERS)
    labels = rng.integers(0, 128, size=MEMBERS)
    writer = FilterWriter(block_buckets=1 << 12)
    # Duplicates merge into one entry: the index must hold one word per entry.
    writer.add_batch(np.concatenate([outputs, outputs[:10]]), np.concatenate([labels, labels[:10]]))
    body, proofs = io.BytesIO(), io.BytesIO()
    summary = writer.finish(body, proofs)
    manifest = manifest_for(summary)
    assert manifest.entry_count == MEMBERS
    return outputs, labels, BreachFilter.from_bytes(body.getvalue(), manifest), proofs.getvalue()


def test_genuine_tokens_prove_their_entry_and_its_label(built) -> None:
    outputs, labels, body, proofs = built
    index = ProofIndex.from_bytes(proofs, body.entry_count)
    assert proven_labels(body, index, derive_keys(outputs)).tolist() == labels.tolist()


def test_tokens_outside_the_breach_prove_nothing(built) -> None:
    _, _, body, proofs = built
    index = ProofIndex.from_bytes(proofs, body.entry_count)
    strangers = random_outputs(np.random.default_rng(RNG_SEED + 1), 500)
    assert set(proven_labels(body, index, derive_keys(strangers)).tolist()) == {NOT_FOUND}


def test_a_tag_that_hits_the_filter_without_the_entrys_hash_is_refused(built) -> None:
    """What grinding for a filter hit yields: the right tag, not the entry's full hash.

    Changing the lowest bit of the first word keeps the bucket (the filter's
    buckets span 2^64 / N values each) and the remainder, so the filter alone
    takes it for the entry; the index does not.
    """
    outputs, _, body, proofs = built
    genuine = derive_keys(outputs[:50])
    forged_hash = genuine.tag_hash.copy()
    forged_hash[:, 0] ^= np.uint64(1)
    forged = TokenKeys(tag_hash=forged_hash, pad=genuine.pad)
    assert (body.lookup_labels(forged) != NOT_FOUND).all()
    index = ProofIndex.from_bytes(proofs, body.entry_count)
    assert set(proven_labels(body, index, forged).tolist()) == {NOT_FOUND}


def test_a_memory_mapped_index_answers_the_same(built, tmp_path: Path) -> None:
    outputs, labels, body, proofs = built
    path = tmp_path / "proofs"
    path.write_bytes(proofs)
    with ProofIndex.open(path, body.entry_count) as index:
        assert proven_labels(body, index, derive_keys(outputs)).tolist() == labels.tolist()


@pytest.mark.parametrize(
    "case", ["other entry count", "cut short", "header of another count", "not sorted", "not BMPI"]
)
def test_an_index_of_another_size_order_or_format_is_refused(built, case: str) -> None:
    _, _, body, proofs = built
    count = body.entry_count
    words = np.frombuffer(proofs, dtype="<u8", offset=PROOF_HEADER_SIZE)
    data, entry_count = {
        "other entry count": (proofs, count - 1),
        "cut short": (proofs[:-8], count),
        "header of another count": (pack_proof_header(count + 1) + words.tobytes(), count),
        "not sorted": (pack_proof_header(count) + words[::-1].tobytes(), count),
        "not BMPI": (b"BMFL" + proofs[4:], count),
    }[case]
    with pytest.raises(FilterFormatError):
        ProofIndex.from_bytes(data, entry_count)
