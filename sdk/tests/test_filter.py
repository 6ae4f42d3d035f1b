"""breachmatch.filter artifacts: build, sign, verify, look up — and refuse tampering."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import date

import nacl.signing
import numpy as np
import pytest

from breachmatch.filter import (
    NOT_FOUND,
    ArtifactError,
    BodyDigestError,
    BreachFilter,
    FilterFormatError,
    FilterParameters,
    FilterWriter,
    Manifest,
    ManifestFormatError,
    ManifestSignatureError,
    TokenKeys,
    derive_keys,
    false_match_bound,
    filter_stats,
    lookup_stream,
    sign_manifest,
    verify_artifact,
    verify_body,
    verify_manifest,
)
from breachmatch.filter.layout import HEADER_SIZE, BodyHeader, BodyLayout
from breachmatch.records import Category
from breachmatch.v1.breach_pb2 import BreachArtifact

RNG_SEED = 20250611


def random_outputs(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 64), dtype=np.uint8)


def build(outputs, labels, block_buckets: int = 1 << 12):
    writer = FilterWriter(block_buckets=block_buckets)
    writer.add_batch(outputs, labels)
    sink = io.BytesIO()
    summary = writer.finish(sink)
    return sink.getvalue(), summary


def manifest_for(summary, breach_id: str = "alles-laegehus-2025") -> Manifest:
    return Manifest.for_body(
        summary,
        breach_id=breach_id,
        version=3,
        title="Alles Lægehus patient records",
        organisation="Alles Lægehus",
        breach_date=date(2025, 5, 2),
        added_date=date(2025, 6, 11),
        descriptions={
            "da": "Patientliste, kontaktoplysninger og henvisninger.\nNogle journaler.",
            "en": "Patient list, contact details and referrals.\nSome medical records.",
        },
        verified=True,
        sensitive=True,
        oprf_key_id="oprf-2025-06",
    )


@pytest.fixture(scope="module")
def signing_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey.generate()


@pytest.fixture(scope="module")
def small():
    """3,000 members with random labels, their body and manifest."""
    rng = np.random.default_rng(RNG_SEED)
    outputs = random_outputs(rng, 3000)
    labels = rng.integers(0, 128, size=3000)
    body, summary = build(outputs, labels)
    return outputs, labels, body, manifest_for(summary)


# --- round trip --------------------------------------------------------------


def test_every_member_is_found_with_its_label_and_strangers_are_not():
    rng = np.random.default_rng(RNG_SEED + 1)
    outputs = random_outputs(rng, 20_000)
    labels = rng.integers(0, 128, size=20_000)
    body, summary = build(outputs, labels)
    breach = BreachFilter.from_bytes(body, manifest_for(summary))

    assert [None if c is None else int(c) for c in breach.lookup(outputs)] == labels.tolist()

    queries = 1_000_000
    strangers = breach.lookup_labels(derive_keys(random_outputs(rng, queries)))
    false_matches = int(np.count_nonzero(strangers != NOT_FOUND))
    bound = false_match_bound(summary.entry_count)
    assert false_matches == 0, (
        f"{false_matches} false matches in {queries} queries; the bound is {bound:.3e} "
        f"per query, {queries * bound:.2e} expected"
    )


def test_lookup_accepts_lists_of_bytes_and_precomputed_keys(small):
    outputs, labels, body, manifest = small
    breach = BreachFilter.from_bytes(body, manifest)
    as_bytes = [row.tobytes() for row in outputs[:50]]
    expected = [Category(v) for v in labels[:50].tolist()]
    assert breach.lookup(as_bytes) == expected
    assert breach.lookup(derive_keys(as_bytes)) == expected


def test_contains_tags_agrees_with_membership(small):
    outputs, _, body, manifest = small
    breach = BreachFilter.from_bytes(body, manifest)
    rng = np.random.default_rng(RNG_SEED + 2)
    keys = derive_keys(np.concatenate([outputs[:500], random_outputs(rng, 500)]))
    found = breach.contains_tags(keys.tags(breach.entry_count))
    assert found.tolist() == [True] * 500 + [False] * 500


def test_a_member_without_categories_is_found_as_an_empty_category():
    outputs = random_outputs(np.random.default_rng(RNG_SEED + 3), 2)
    body, summary = build(outputs, [0, int(Category.CONTACT)])
    result = BreachFilter.from_bytes(body, manifest_for(summary)).lookup(outputs)
    assert result == [Category(0), Category.CONTACT]
    assert result[0] is not None


def test_empty_filter():
    body, summary = build(np.zeros((0, 64), dtype=np.uint8), [])
    manifest = manifest_for(summary)
    queries = random_outputs(np.random.default_rng(RNG_SEED + 4), 100)

    assert summary.entry_count == 0
    assert len(body) == HEADER_SIZE
    assert set(summary.category_counts.values()) == {0}
    assert BreachFilter.from_bytes(body, manifest).lookup(queries) == [None] * 100
    assert lookup_stream([body], manifest, queries) == [None] * 100
    stats = filter_stats(manifest)
    assert stats.false_match_probability == 0.0
    assert stats.bytes_per_entry == float("inf")


def test_one_entry_filter():
    rng = np.random.default_rng(RNG_SEED + 5)
    member = random_outputs(rng, 1)
    body, summary = build(member, [int(Category.MEDICATION | Category.REFERRALS)])
    breach = BreachFilter.from_bytes(body, manifest_for(summary))
    assert breach.lookup(member) == [Category.MEDICATION | Category.REFERRALS]
    assert breach.lookup(random_outputs(rng, 10_000)) == [None] * 10_000
    assert filter_stats(summary).false_match_probability == 2.0**-40


# --- determinism and merging ------------------------------------------------


def test_body_is_identical_for_any_order_batching_and_repeats():
    rng = np.random.default_rng(RNG_SEED + 6)
    outputs = random_outputs(rng, 5000)
    labels = rng.integers(0, 128, size=5000)
    reference, summary = build(outputs, labels)

    shuffled = rng.permutation(5000)
    repeats = shuffled[:700]
    writer = FilterWriter(block_buckets=1 << 12)
    for start in range(0, 5000, 1234):
        part = shuffled[start : start + 1234]
        writer.add_batch([outputs[i].tobytes() for i in part], labels[part])
    for i in repeats[:20]:
        writer.add(outputs[i].tobytes(), int(labels[i]))
    writer.add_batch(outputs[repeats], labels[repeats])
    assert len(writer) == 5000 + 20 + 700
    sink = io.BytesIO()

    assert writer.finish(sink) == summary
    assert sink.getvalue() == reference


def test_duplicate_outputs_merge_their_labels():
    outputs = random_outputs(np.random.default_rng(RNG_SEED + 7), 2)
    twice = np.stack([outputs[0], outputs[1], outputs[0]])
    labels = [int(Category.CONTACT), int(Category.FREE_TEXT), int(Category.MEDICATION)]
    body, summary = build(twice, labels)
    result = BreachFilter.from_bytes(body, manifest_for(summary)).lookup(outputs)
    assert summary.entry_count == 2
    assert result == [Category.CONTACT | Category.MEDICATION, Category.FREE_TEXT]
    assert summary.category_counts["contact"] == 1
    assert summary.category_counts["medication"] == 1
    assert summary.category_counts["free_text"] == 1


def _keys(tag_hash: list[list[int]], pads: list[int]) -> TokenKeys:
    return TokenKeys(
        tag_hash=np.array(tag_hash, dtype=np.uint64), pad=np.array(pads, dtype=np.uint8)
    )


def test_outputs_sharing_a_tag_both_see_their_own_categories():
    """Same bucket word and same 40 remainder bits, different outputs."""
    shared_wide, remainder = 0x9E3779B97F4A7C15, 0x12_3456_789A
    first = _keys([[shared_wide, remainder | (1 << 50)]], [0x5A])
    second = _keys([[shared_wide, remainder | (1 << 60)]], [0xC3])
    bystander = _keys([[shared_wide + 1, 7]], [0])

    pairs = [
        (first, Category.CONTACT),
        (second, Category.DIAGNOSES),
        (bystander, Category.REFERRALS),
    ]
    bodies = []
    for order in (pairs, pairs[::-1]):
        writer = FilterWriter(block_buckets=1 << 12)
        for keys, label in order:
            writer.add_keys(keys, [int(label)])
        sink = io.BytesIO()
        summary = writer.finish(sink)
        bodies.append(sink.getvalue())
    assert bodies[0] == bodies[1]
    assert summary.entry_count == 3

    breach = BreachFilter.from_bytes(bodies[0], manifest_for(summary))
    first_label, second_label = breach.lookup_labels(first)[0], breach.lookup_labels(second)[0]
    assert first_label & Category.CONTACT
    assert second_label & Category.DIAGNOSES
    assert breach.lookup(bystander) == [Category.REFERRALS]


def test_duplicates_interleaved_with_a_first_word_twin_still_merge():
    """A, B, A where A and B share the 64-bit bucket word: A's copies must meet."""
    a = _keys([[42, 1]], [9])
    b = _keys([[42, 2]], [9])
    writer = FilterWriter(block_buckets=1 << 12)
    for keys, label in ((a, Category.CONTACT), (b, Category.DIAGNOSES), (a, Category.MEDICATION)):
        writer.add_keys(keys, [int(label)])
    sink = io.BytesIO()
    summary = writer.finish(sink)
    breach = BreachFilter.from_bytes(sink.getvalue(), manifest_for(summary))
    assert summary.entry_count == 2
    assert breach.lookup(a) == [Category.CONTACT | Category.MEDICATION]
    assert breach.lookup(b) == [Category.DIAGNOSES]


# --- confidentiality of labels ----------------------------------------------


def _stored_labels(body: bytes) -> np.ndarray:
    header = BodyHeader.unpack(body)
    layout = BodyLayout.unpack(header, body[HEADER_SIZE : HEADER_SIZE + header.index_size])
    offsets, counts = layout.block_offsets, layout.entries
    return np.concatenate(
        [
            np.frombuffer(body[offsets[j + 1] - counts[j] : offsets[j + 1]], dtype=np.uint8)
            for j in range(header.block_count)
        ]
    )


def test_labels_are_stored_encrypted():
    outputs = random_outputs(np.random.default_rng(RNG_SEED + 8), 4000)
    body, _ = build(outputs, [int(Category.NATIONAL_ID)] * 4000)
    stored = _stored_labels(body)
    assert len(stored) == 4000
    assert np.count_nonzero(stored == int(Category.NATIONAL_ID)) < 4000 * 0.02
    assert len(np.unique(stored)) > 200


def test_a_label_cannot_be_read_with_another_outputs_key(small):
    outputs, labels, body, manifest = small
    breach = BreachFilter.from_bytes(body, manifest)
    own = derive_keys(outputs)
    borrowed = TokenKeys(tag_hash=own.tag_hash, pad=np.roll(own.pad, 1))
    read = breach.lookup_labels(borrowed)
    assert np.all(read != NOT_FOUND)
    correct = np.count_nonzero(read == labels)
    assert correct < len(labels) * 0.05, f"{correct} of {len(labels)} labels read without key"


# --- readers ------------------------------------------------------------------


def test_memory_mapped_file_reads_like_bytes(small, tmp_path):
    outputs, labels, body, manifest = small
    path = tmp_path / "breach.body"
    path.write_bytes(body)
    with BreachFilter.open(path, manifest) as breach:
        assert breach.entry_count == 3000
        assert [None if c is None else int(c) for c in breach.lookup(outputs)] == labels.tolist()


def test_cached_blocks_answer_like_fresh_decodes_one_token_at_a_time(tmp_path):
    rng = np.random.default_rng(RNG_SEED + 8)
    outputs = random_outputs(rng, 10_000)
    labels = rng.integers(0, 128, size=10_000)
    strangers = random_outputs(rng, 50)
    body, summary = build(outputs, labels)
    path = tmp_path / "breach.body"
    path.write_bytes(body)
    # Fewer cached blocks than the filter has, so blocks are evicted and decoded again.
    with BreachFilter.open(path, manifest_for(summary), cached_blocks=2) as breach:
        assert breach.entry_count > 2 * breach.parameters.block_buckets
        for _ in range(2):
            found = [breach.lookup(outputs[i : i + 1])[0] for i in range(0, 10_000, 23)]
            assert [None if c is None else int(c) for c in found] == labels[::23].tolist()
            assert breach.lookup(strangers) == [None] * 50
    # close() released the mapped body although decoded blocks had been cached.


@pytest.mark.parametrize("chunk_size", [1, 997, 1 << 20])
def test_stream_lookup_answers_like_random_access(small, chunk_size):
    outputs, labels, body, manifest = small
    rng = np.random.default_rng(RNG_SEED + 9)
    queries = np.concatenate([outputs[::7], random_outputs(rng, 200)])
    chunks = (body[i : i + chunk_size] for i in range(0, len(body), chunk_size))
    expected = [Category(v) for v in labels[::7].tolist()] + [None] * 200
    assert lookup_stream(chunks, manifest, queries) == expected


def test_stream_lookup_refuses_a_truncated_or_extended_body(small):
    outputs, _, body, manifest = small
    with pytest.raises(BodyDigestError):
        lookup_stream([body[:-1]], manifest, outputs[:3])
    with pytest.raises(BodyDigestError):
        lookup_stream([body, b"\x00"], manifest, outputs[:3])


def test_body_header_must_agree_with_the_manifest(small):
    _, _, body, manifest = small
    for change in (
        {"entry_count": manifest.entry_count - 1},
        {"filter_parameters": FilterParameters(block_buckets=1 << 13)},
    ):
        with pytest.raises(FilterFormatError, match="header disagrees"):
            BreachFilter.from_bytes(body, dataclasses.replace(manifest, **change))


# --- tampering ----------------------------------------------------------------


def test_any_flipped_body_byte_is_rejected(small):
    outputs, _, body, manifest = small
    verify_body(manifest, body)
    for position in range(len(body)):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        with pytest.raises(BodyDigestError):
            verify_body(manifest, tampered)
        with pytest.raises(BodyDigestError):
            BreachFilter.from_bytes(tampered, manifest)
    for position in range(0, len(body), 61):
        tampered = bytearray(body)
        tampered[position] ^= 0x80
        with pytest.raises(ArtifactError):
            lookup_stream([bytes(tampered)], manifest, outputs[:100])


def test_any_flipped_manifest_or_signature_byte_is_rejected(small, signing_key):
    signed = sign_manifest(small[3], signing_key)
    assert (
        verify_manifest(signed.manifest_bytes, signed.signature, signing_key.verify_key)
        == (small[3])
    )
    for position in range(len(signed.manifest_bytes)):
        tampered = bytearray(signed.manifest_bytes)
        tampered[position] ^= 0x01
        with pytest.raises(ManifestSignatureError):
            verify_manifest(bytes(tampered), signed.signature, signing_key.verify_key)
    for position in range(len(signed.signature)):
        tampered = bytearray(signed.signature)
        tampered[position] ^= 0x01
        with pytest.raises(ManifestSignatureError):
            verify_manifest(signed.manifest_bytes, bytes(tampered), signing_key.verify_key)


def test_another_key_does_not_verify(small, signing_key):
    signed = sign_manifest(small[3], signing_key)
    stranger = nacl.signing.SigningKey.generate().verify_key
    with pytest.raises(ManifestSignatureError):
        verify_manifest(signed.manifest_bytes, signed.signature, stranger)
    with pytest.raises(ManifestSignatureError, match="64 bytes"):
        verify_manifest(signed.manifest_bytes, signed.signature[:-1], signing_key.verify_key)


def test_signature_covers_the_context_not_just_the_bytes(small, signing_key):
    data = small[3].to_bytes()
    bare = signing_key.sign(data).signature
    with pytest.raises(ManifestSignatureError):
        verify_manifest(data, bare, signing_key.verify_key)


# --- manifest format ----------------------------------------------------------


def test_manifest_is_canonical_json_and_round_trips(small):
    manifest = small[3]
    data = manifest.to_bytes()
    document = json.loads(data)
    assert data == json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert "Lægehus" in data.decode("utf-8")
    assert Manifest.from_bytes(data) == manifest
    assert document["categories"] == Category.legend()
    assert document["filter_parameters"] == {
        "format_version": 1,
        "m_log2": 40,
        "rice_bits": 40,
        "block_buckets": 4096,
    }
    assert document["entry_count"] == 3000
    assert sum(document["category_counts"].values()) > 0
    assert (document["manifest_version"], document["version"]) == (2, 3)
    assert set(document["descriptions"]) == {"da", "en"}


def test_validly_signed_but_non_canonical_bytes_are_refused(small, signing_key):
    pretty = json.dumps(json.loads(small[3].to_bytes()), indent=1).encode()
    signature = sign_manifest(small[3], signing_key).signature
    with pytest.raises(ManifestSignatureError):
        verify_manifest(pretty, signature, signing_key.verify_key)
    with pytest.raises(ManifestFormatError, match="canonical"):
        Manifest.from_bytes(pretty)


def _edited(manifest: Manifest, edit) -> bytes:
    document = json.loads(manifest.to_bytes())
    edit(document)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.pop("body_sha256"), "body_sha256 is missing"),
        (lambda d: d.update(extra=1), "unknown fields"),
        (lambda d: d.update(entry_count=1.0), "JSON of integers and text"),
        (lambda d: d.update(entry_count=True), "entry_count must be an integer"),
        (lambda d: d.update(verified=1), "verified must be true or false"),
        (lambda d: d.update(breach_date="2025-13-01"), "ISO date"),
        (lambda d: d.update(breach_id="../etc"), "breach_id"),
        (lambda d: d.update(body_sha256="AB" * 32), "hex"),
        (lambda d: d["categories"].update(contact=128), "legend"),
        (lambda d: d["category_counts"].pop("contact"), "every category"),
        (lambda d: d["filter_parameters"].update(m_log2=32), "filter_parameters"),
        (lambda d: d.update(manifest_version=1), "manifest_version"),
        (lambda d: d.pop("version"), "version is missing"),
        (lambda d: d.update(version=0), "version must be a positive integer"),
        (lambda d: d.update(version=2**53), "version must be a positive integer"),
        (lambda d: d.update(version="2"), "version must be an integer"),
        (lambda d: d.update(description="one text"), "unknown fields"),
        (lambda d: d["descriptions"].update(DA="x"), "language codes"),
        (lambda d: d["descriptions"].update(de=""), "language codes"),
        (lambda d: d["descriptions"].update(de=1), "descriptions.de must be a string"),
    ],
)
def test_malformed_manifests_are_refused(small, edit, reason):
    with pytest.raises(ManifestFormatError, match=reason):
        Manifest.from_bytes(_edited(small[3], edit))


def test_artifact_round_trips_through_protobuf(small, signing_key):
    signed = sign_manifest(small[3], signing_key)
    wire = BreachArtifact.FromString(signed.to_artifact().SerializeToString())
    assert wire.breach_id == "alles-laegehus-2025"
    assert wire.body_size == len(small[2])
    assert verify_artifact(wire, signing_key.verify_key) == small[3]

    for field, value in (("breach_id", "another-breach"), ("body_size", 1)):
        forged = BreachArtifact()
        forged.CopyFrom(wire)
        setattr(forged, field, value)
        with pytest.raises(ManifestFormatError, match=field):
            verify_artifact(forged, signing_key.verify_key)


def test_spilled_runs_give_the_same_body_as_memory(tmp_path):
    """Runs of 997 pairs (so slices split blocks), repeats spread over many runs."""
    rng = np.random.default_rng(RNG_SEED + 13)
    outputs = random_outputs(rng, 20_000)
    labels = rng.integers(0, 128, size=20_000)
    again = rng.permutation(20_000)[:6000]
    all_outputs = np.concatenate([outputs, outputs[again]])
    all_labels = np.concatenate([labels, rng.integers(0, 128, size=6000)])
    reference, summary = build(all_outputs, all_labels)

    writer = FilterWriter(block_buckets=1 << 12, run_pairs=997, spill_dir=tmp_path)
    for start in range(0, len(all_outputs), 1500):
        writer.add_batch(all_outputs[start : start + 1500], all_labels[start : start + 1500])
    assert writer.spilled_runs == len(all_outputs) // 1500
    sink = io.BytesIO()

    assert writer.finish(sink) == summary
    assert sink.getvalue() == reference
    assert summary.entry_count == 20_000
    assert writer.spilled_runs == 0


def test_first_word_twins_in_different_runs_still_merge(tmp_path):
    """A, B, A in three runs, A and B sharing the bucket word: A's copies meet in the merge."""
    a = _keys([[42, 1]], [9])
    b = _keys([[42, 2]], [9])
    c = _keys([[43, 0]], [1])
    bodies = []
    for run_pairs in (1, 1 << 20):
        writer = FilterWriter(block_buckets=1 << 12, run_pairs=run_pairs, spill_dir=tmp_path)
        for keys, label in (
            (a, Category.CONTACT),
            (b, Category.DIAGNOSES),
            (c, Category.REFERRALS),
            (a, Category.MEDICATION),
        ):
            writer.add_keys(keys, [int(label)])
        sink = io.BytesIO()
        summary = writer.finish(sink)
        bodies.append(sink.getvalue())
    breach = BreachFilter.from_bytes(bodies[0], manifest_for(summary))
    assert bodies[0] == bodies[1]
    assert summary.entry_count == 3
    assert breach.lookup(a) == [Category.CONTACT | Category.MEDICATION]
    assert breach.lookup(b) == [Category.DIAGNOSES]


# --- writer input -------------------------------------------------------------


def test_writer_rejects_bad_labels_and_reuse():
    output = random_outputs(np.random.default_rng(RNG_SEED + 10), 1)
    writer = FilterWriter()
    with pytest.raises(ValueError, match="outside the category legend"):
        writer.add_batch(output, [128])
    with pytest.raises(ValueError, match="one per output"):
        writer.add_batch(output, [1, 2])
    with pytest.raises(ValueError, match="run_pairs"):
        FilterWriter(run_pairs=0)
    assert len(writer) == 0
    writer.finish(io.BytesIO())
    with pytest.raises(RuntimeError, match="finished"):
        writer.add_batch(output, [1])
    with pytest.raises(RuntimeError, match="finished"):
        writer.finish(io.BytesIO())


def test_bytes_per_entry_meets_the_gcs_target():
    outputs = random_outputs(np.random.default_rng(RNG_SEED + 11), 100_000)
    _, summary = build(outputs, np.zeros(100_000, dtype=np.uint8), block_buckets=1 << 14)
    stats = filter_stats(summary)
    # OpenMined GCS: about 5.7 B at 2^-44, so about 5.2 B at our 2^-40; plus 1 B label.
    assert stats.tag_bytes_per_entry < 5.21
    assert stats.bytes_per_entry == pytest.approx(stats.tag_bytes_per_entry + 1)
    assert stats.false_match_log2 == pytest.approx(-40, abs=1e-9)


# --- scale --------------------------------------------------------------------


@pytest.mark.slow
def test_two_million_entries_answer_correctly():
    rng = np.random.default_rng(RNG_SEED + 12)
    count = 2_000_000
    writer = FilterWriter()
    sample_outputs, sample_labels = [], []
    for _ in range(4):
        outputs = random_outputs(rng, count // 4)
        labels = rng.integers(0, 128, size=count // 4)
        writer.add_batch(outputs, labels)
        sample_outputs.append(outputs[:25_000])
        sample_labels.append(labels[:25_000])
    sink = io.BytesIO()
    summary = writer.finish(sink)
    breach = BreachFilter.from_bytes(sink.getvalue(), manifest_for(summary))

    members = np.concatenate(sample_outputs)
    strangers = random_outputs(rng, 100_000)
    found = breach.lookup_labels(derive_keys(np.concatenate([members, strangers])))
    assert summary.entry_count == count
    assert found[:100_000].tolist() == np.concatenate(sample_labels).tolist()
    assert np.all(found[100_000:] == NOT_FOUND)
