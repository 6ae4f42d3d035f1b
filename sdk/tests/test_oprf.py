"""RFC 9497 OPRF(ristretto255, SHA-512), both modes: the standard's vectors and properties.

Mode 0x00 (A.1.1) is kept for comparison; the batch proofs of mode 0x01
(A.1.2) are tested in test_voprf.py.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import rbcl
from hypothesis import given, settings
from hypothesis import strategies as st

from breachmatch import oprf

# RFC 9497 Appendix A.1.1 — OPRF(ristretto255, SHA-512), mode 0x00.
SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
SK_SM = bytes.fromhex("5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e")
BLIND = bytes.fromhex("64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706")
VECTORS = [
    (
        "00",
        "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
        "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
        "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3"
        "ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
    ),
    (
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
        "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
        "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4"
        "f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73",
    ),
]


def test_context_string_is_the_rfc_one():
    assert oprf.CONTEXT_STRING == b"OPRFV1-\x00-ristretto255-SHA512"


def test_context_strings_differ_only_in_the_mode_byte():
    assert oprf.VOPRF.context == b"OPRFV1-\x01-ristretto255-SHA512"
    assert oprf.OPRF.hash_to_group_dst != oprf.VOPRF.hash_to_group_dst


def test_derive_key_pair_matches_rfc():
    sk, pk = oprf.derive_key_pair(SEED, KEY_INFO, oprf.OPRF)
    assert sk == SK_SM
    assert pk == rbcl.crypto_scalarmult_ristretto255_base(SK_SM)


@pytest.mark.parametrize(("inp", "blinded", "evaluated", "output"), VECTORS)
def test_rfc_vectors(inp, blinded, evaluated, output):
    data = bytes.fromhex(inp)
    r, blinded_element = oprf.blind(data, BLIND, oprf.OPRF)
    assert r == BLIND
    assert blinded_element.hex() == blinded
    evaluated_element = oprf.blind_evaluate(SK_SM, blinded_element)
    assert evaluated_element.hex() == evaluated
    assert oprf.finalize(data, BLIND, evaluated_element).hex() == output
    assert oprf.finalize_batch([data], [BLIND], [evaluated_element])[0].hex() == output
    assert oprf.evaluate(SK_SM, data, oprf.OPRF).hex() == output
    assert oprf.evaluate_batch(SK_SM, [data], oprf.OPRF)[0].hex() == output


def test_the_mode_changes_every_output():
    assert oprf.evaluate(SK_SM, b"x", oprf.OPRF) != oprf.evaluate(SK_SM, b"x", oprf.VOPRF)


@pytest.mark.parametrize(
    ("msg", "length", "expected"),
    [
        # RFC 9380 Appendix K.3, expand_message_xmd(SHA-512).
        (
            b"abcdef0123456789",
            0x20,
            "087e45a86e2939ee8b91100af1583c4938e0f5fc6c9db4b107b83346bc967f58",
        ),
        (
            b"abc",
            0x80,
            "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11"
            "bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134"
            "7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843"
            "1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1",
        ),
    ],
)
def test_expand_message_xmd_vectors(msg, length, expected):
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(msg, dst, length).hex() == expected


keys = st.binary(min_size=32, max_size=32).map(lambda s: oprf.derive_key_pair(s, b"t")[0])


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=64), sk=keys)
def test_finalize_of_blind_evaluate_equals_evaluate(data, sk):
    r, blinded = oprf.blind(data)
    assert oprf.finalize(data, r, oprf.blind_evaluate(sk, blinded)) == oprf.evaluate(sk, data)


@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=64), sk=keys, other=keys)
def test_wrong_key_gives_another_output(data, sk, other):
    if sk == other:
        return
    r, blinded = oprf.blind(data)
    assert oprf.finalize(data, r, oprf.blind_evaluate(other, blinded)) != oprf.evaluate(sk, data)


def test_blinding_hides_the_input_element():
    data = b"cpr:0101701234"
    _, first = oprf.blind(data)
    _, second = oprf.blind(data)
    assert first != second
    assert oprf.hash_to_group(data) not in (first, second)


def _top_bit(element: bytes) -> bytes:
    """The same element's encoding with bit 255 set: libsodium decodes it, RFC 9496 refuses it."""
    return element[:31] + bytes([element[31] | 0x80])


def test_libsodium_alone_accepts_a_top_bit_encoding():
    """Why `validate_element` checks the bit itself: this test fails if libsodium ever starts."""
    element = oprf.blind(b"x")[1]
    crafted = _top_bit(element)
    assert rbcl.crypto_core_ristretto255_is_valid_point(crafted)
    assert rbcl.crypto_scalarmult_ristretto255(SK_SM, crafted) == oprf.blind_evaluate(
        SK_SM, element
    )


INVALID_ELEMENTS = pytest.mark.parametrize(
    ("element", "reason"),
    [
        (bytes(32), "identity"),
        (b"\xff" * 32, "canonical"),
        (b"\x01" * 31, "32 bytes"),
        # The field prime p = 2^255 - 19 itself is a non-canonical encoding of 0.
        ((2**255 - 19).to_bytes(32, "little"), "canonical"),
        # A valid element with the top bit set, and the identity with it.
        (_top_bit(oprf.hash_to_group(b"crafted")), "top bit"),
        (_top_bit(bytes(32)), "top bit"),
    ],
)


@INVALID_ELEMENTS
def test_invalid_elements_are_rejected_with_index(element, reason):
    good = oprf.blind(b"x")[1]
    with pytest.raises(oprf.InvalidElementError, match=reason) as info:
        oprf.blind_evaluate_batch(SK_SM, [good, good, element])
    assert info.value.index == 2


@INVALID_ELEMENTS
def test_a_product_refuses_what_validation_refuses_and_says_why(element, reason):
    """`times_received` leaves decoding to libsodium's multiplication: same refusals, same words."""
    with pytest.raises(oprf.InvalidElementError, match=reason) as info:
        oprf.times_received(SK_SM, element, 7)
    assert info.value.index == 7


def test_a_product_of_a_valid_element_is_the_scalar_multiple():
    element = oprf.hash_to_group(b"valid")
    assert oprf.times_received(SK_SM, element) == rbcl.crypto_scalarmult_ristretto255(
        SK_SM, element
    )
    # A zero scalar (a composite weight can be one, with probability 2^-252) gives the identity.
    assert oprf.times_received(bytes(32), element) == bytes(32)


@settings(max_examples=30, deadline=None)
@given(msg=st.binary(max_size=300), dst=st.binary(min_size=1, max_size=255))
def test_the_64_byte_expansion_is_the_general_one(msg, dst):
    assert oprf.expand_message_xmd_64(msg, dst) == oprf.expand_message_xmd(msg, dst, 64)


def test_finalize_rejects_invalid_evaluated_element():
    r, blinded = oprf.blind(b"x")
    with pytest.raises(oprf.InvalidElementError):
        oprf.finalize(b"x", r, bytes(32))
    with pytest.raises(oprf.InvalidElementError, match="top bit"):
        oprf.finalize_batch([b"x"], [r], [_top_bit(oprf.blind_evaluate(SK_SM, blinded))])


def test_invert_batch_inverts_every_scalar():
    scalars = [bytes(rbcl.crypto_core_ristretto255_scalar_random()) for _ in range(7)]
    one = (1).to_bytes(32, "little")
    assert oprf.invert_batch([]) == []
    for scalar, inverse in zip(scalars, oprf.invert_batch(scalars), strict=True):
        assert rbcl.crypto_core_ristretto255_scalar_mul(scalar, inverse) == one


def test_blind_rejects_unreduced_or_zero_blind():
    with pytest.raises(oprf.OprfError):
        oprf.blind(b"x", bytes(32))
    with pytest.raises(oprf.OprfError):
        oprf.blind(b"x", b"\xff" * 32)


def test_batches_match_single_calls():
    inputs = [f"cpr:{i:010d}".encode() for i in range(50)]
    blinds, blinded = oprf.blind_batch(inputs)
    evaluated = oprf.blind_evaluate_batch(SK_SM, blinded)
    outputs = oprf.finalize_batch(inputs, blinds, evaluated)
    assert outputs == oprf.evaluate_batch(SK_SM, inputs)
    assert outputs == [oprf.evaluate(SK_SM, d) for d in inputs]
    # Each blinded element is the RFC's Blind of its input under its blind.
    for data, r, element in zip(inputs, blinds, blinded, strict=True):
        assert oprf.blind(data, r) == (r, element)
    assert len(set(blinds)) == len(blinds)


def test_parallel_batches_match_sequential():
    n = oprf.PARALLEL_THRESHOLD + 101
    inputs = [f"email:p{i}@example.dk".encode() for i in range(n)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        parallel = oprf.evaluate_batch_parallel(SK_SM, inputs, pool, workers=2)
    assert parallel == oprf.evaluate_batch(SK_SM, inputs)


def test_importing_leaves_no_copy_of_libsodium_behind():
    """rbcl writes its libsodium to a temporary file at import; the OPRF module removes it."""
    script = (
        "import sys, breachmatch.oprf\n"
        "assert breachmatch.oprf.hash_to_group(b'x')\n"  # libsodium still works
        "print(sys.modules['rbcl._sodium'].lib_path)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    )
    copy = Path(done.stdout.strip())
    assert copy.name.endswith(".so")
    assert not copy.exists()
