"""RFC 9497 VOPRF (mode 0x01) with batched DLEQ proofs: the A.1.2 vectors and attacks on them."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import rbcl

from breachmatch import oprf, voprf

# RFC 9497 Appendix A.1.2 — VOPRF(ristretto255, SHA-512), mode 0x01.
SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
SK_SM = bytes.fromhex("e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909")
PK_SM = bytes.fromhex("c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e")
BLIND_1 = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"
BLIND_2 = "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e"
IN_1, IN_2 = "00", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
BLINDED_1 = "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945"
EVALUATED_1 = "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e"
OUTPUT_1 = (
    "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
    "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"
)
OUTPUT_2 = (
    "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
    "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"
)
VECTORS = [
    pytest.param(
        [IN_1],
        [BLIND_1],
        [BLINDED_1],
        [EVALUATED_1],
        "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06"
        "6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        BLIND_2,
        [OUTPUT_1],
        id="A.1.2.1 batch 1",
    ),
    pytest.param(
        [IN_2],
        [BLIND_1],
        ["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
        ["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
        "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a"
        "67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        BLIND_2,
        [OUTPUT_2],
        id="A.1.2.2 batch 1",
    ),
    pytest.param(
        [IN_1, IN_2],
        [BLIND_1, BLIND_2],
        [BLINDED_1, "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654"],
        [EVALUATED_1, "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a"],
        "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a"
        "5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        [OUTPUT_1, OUTPUT_2],
        id="A.1.2.3 batch 2",
    ),
]


def _hex(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def test_derive_key_pair_matches_rfc():
    assert oprf.derive_key_pair(SEED, KEY_INFO, oprf.VOPRF) == (SK_SM, PK_SM)
    assert oprf.public_key(SK_SM) == PK_SM


@pytest.mark.parametrize(
    ("inputs", "blinds", "blinded", "evaluated", "proof", "proof_scalar", "outputs"), VECTORS
)
def test_rfc_vectors(inputs, blinds, blinded, evaluated, proof, proof_scalar, outputs):
    data, r = _hex(inputs), _hex(blinds)
    assert [oprf.blind(d, b, oprf.VOPRF)[1] for d, b in zip(data, r, strict=True)] == _hex(blinded)
    got_evaluated, got_proof = voprf.blind_evaluate_batch(
        SK_SM, PK_SM, _hex(blinded), bytes.fromhex(proof_scalar)
    )
    assert got_evaluated == _hex(evaluated)
    assert got_proof.hex() == proof
    assert voprf.generate_proof(
        SK_SM, PK_SM, _hex(blinded), _hex(evaluated), bytes.fromhex(proof_scalar)
    ) == bytes.fromhex(proof)
    assert voprf.verify_proof(PK_SM, _hex(blinded), _hex(evaluated), bytes.fromhex(proof))
    finalized = voprf.finalize_batch(
        PK_SM, data, r, _hex(blinded), _hex(evaluated), bytes.fromhex(proof)
    )
    assert finalized == _hex(outputs)
    assert [oprf.evaluate(SK_SM, d, oprf.VOPRF) for d in data] == _hex(outputs)


def test_composites_fast_and_verifier_forms_agree():
    _, blinded = oprf.blind_batch([b"a", b"b", b"c"])
    evaluated = oprf.blind_evaluate_batch(SK_SM, blinded)
    assert voprf.compute_composites_fast(SK_SM, PK_SM, blinded, evaluated) == (
        voprf.compute_composites(PK_SM, blinded, evaluated)
    )


# --- a server that cheats ------------------------------------------------------------

OTHER_SK, OTHER_PK = oprf.random_key_pair()
INPUTS = [f"cpr:{i:010d}".encode() for i in range(24)]


def _honest_batch():
    blinds, blinded = oprf.blind_batch(INPUTS)
    evaluated, proof = voprf.blind_evaluate_batch(SK_SM, PK_SM, blinded)
    return blinds, blinded, evaluated, proof


def test_an_honest_batch_finalizes_to_the_prf():
    blinds, blinded, evaluated, proof = _honest_batch()
    outputs = voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, evaluated, proof)
    assert outputs == oprf.evaluate_batch(SK_SM, INPUTS)


def test_a_batch_under_another_key_is_refused_even_with_a_valid_proof_for_that_key():
    blinds, blinded = oprf.blind_batch(INPUTS)
    evaluated, proof = voprf.blind_evaluate_batch(OTHER_SK, OTHER_PK, blinded)
    assert voprf.verify_proof(OTHER_PK, blinded, evaluated, proof)
    with pytest.raises(voprf.VerifyError):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, evaluated, proof)


@pytest.mark.parametrize("index", [0, 11, len(INPUTS) - 1])
def test_one_element_under_another_key_is_refused(index):
    blinds, blinded, evaluated, proof = _honest_batch()
    forged = list(evaluated)
    forged[index] = oprf.blind_evaluate(OTHER_SK, blinded[index])
    with pytest.raises(voprf.VerifyError):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, forged, proof)
    # ...and no proof the cheater can make with its own key covers the mixed batch.
    assert not voprf.verify_proof(
        PK_SM, blinded, forged, voprf.generate_proof(OTHER_SK, PK_SM, blinded, forged)
    )


def test_swapped_elements_are_refused():
    blinds, blinded, evaluated, proof = _honest_batch()
    swapped = [evaluated[1], evaluated[0], *evaluated[2:]]
    with pytest.raises(voprf.VerifyError):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, swapped, proof)


def test_a_proof_for_another_batch_is_refused():
    blinds, blinded, evaluated, _ = _honest_batch()
    _, other_blinded = oprf.blind_batch(INPUTS)
    _, other_proof = voprf.blind_evaluate_batch(SK_SM, PK_SM, other_blinded)
    with pytest.raises(voprf.VerifyError):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, evaluated, other_proof)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda p: _flip(p, 0), id="c changed"),
        pytest.param(lambda p: _flip(p, 40), id="s changed"),
        pytest.param(lambda p: p[:63], id="short"),
        pytest.param(lambda p: p + b"\x00", id="long"),
        pytest.param(lambda p: b"", id="missing"),
        pytest.param(lambda p: p[:32] + b"\xff" * 32, id="s not reduced"),
        # c + L is the same scalar mod L but not its canonical encoding.
        pytest.param(
            lambda p: (
                (
                    int.from_bytes(p[:32], "little")
                    + 2**252
                    + 27742317777372353535851937790883648493
                ).to_bytes(32, "little")
                + p[32:]
            ),
            id="c + group order",
        ),
    ],
)
def test_mangled_proofs_are_refused(mangle):
    blinds, blinded, evaluated, proof = _honest_batch()
    with pytest.raises(voprf.VerifyError):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, evaluated, mangle(proof))


def test_a_top_bit_evaluated_element_is_refused_though_libsodium_would_decode_it():
    blinds, blinded, evaluated, proof = _honest_batch()
    crafted = list(evaluated)
    crafted[3] = crafted[3][:31] + bytes([crafted[3][31] | 0x80])
    assert rbcl.crypto_core_ristretto255_is_valid_point(crafted[3])
    with pytest.raises(voprf.VerifyError, match="top bit"):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, crafted, proof)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (bytes(32), "identity"),
        (b"\xff" * 32, "canonical"),
        ((2**255 - 19).to_bytes(32, "little"), "canonical"),
        (b"\x01" * 31, "32 bytes"),
    ],
)
def test_an_invalid_evaluated_element_refuses_the_batch_and_says_why(bad, reason):
    """Evaluated elements are decoded only by the composite's multiplication: still refused."""
    blinds, blinded, evaluated, proof = _honest_batch()
    crafted = list(evaluated)
    crafted[5] = bad
    with pytest.raises(voprf.VerifyError, match=reason):
        voprf.finalize_batch(PK_SM, INPUTS, blinds, blinded, crafted, proof)
    assert not voprf.verify_proof(PK_SM, blinded, crafted, proof)


def test_a_top_bit_public_key_never_verifies():
    _, blinded, evaluated, proof = _honest_batch()
    assert voprf.verify_proof(PK_SM, blinded, evaluated, proof)
    assert not voprf.verify_proof(PK_SM[:31] + bytes([PK_SM[31] | 0x80]), blinded, evaluated, proof)


def test_the_server_refuses_a_top_bit_blinded_element_with_its_index():
    _, blinded = oprf.blind_batch(INPUTS)
    crafted = list(blinded)
    crafted[5] = crafted[5][:31] + bytes([crafted[5][31] | 0x80])
    with pytest.raises(oprf.InvalidElementError, match="top bit") as info:
        voprf.blind_evaluate_batch(SK_SM, PK_SM, crafted)
    assert info.value.index == 5


def test_batch_size_limits():
    with pytest.raises(oprf.OprfError):
        voprf.blind_evaluate_batch(SK_SM, PK_SM, [])
    assert not voprf.verify_proof(PK_SM, [], [], bytes(64))


def test_parallel_evaluation_proves_the_same_batch():
    n = oprf.PARALLEL_THRESHOLD + 101
    inputs = [f"email:p{i}@example.dk".encode() for i in range(n)]
    blinds, blinded = oprf.blind_batch(inputs)
    # Spawned, as the matcher's pool is: forking a test process that runs gRPC and NATS
    # threads can deadlock the children.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        evaluated, proof = voprf.blind_evaluate_batch_parallel(
            SK_SM, PK_SM, blinded, pool, workers=2
        )
        bad = list(blinded)
        bad[n - 7] = bytes(32)
        with pytest.raises(oprf.InvalidElementError) as info:
            voprf.blind_evaluate_batch_parallel(SK_SM, PK_SM, bad, pool, workers=2)
    assert info.value.index == n - 7
    assert evaluated == oprf.blind_evaluate_batch(SK_SM, blinded)
    outputs = voprf.finalize_batch(PK_SM, inputs, blinds, blinded, evaluated, proof)
    assert outputs == oprf.evaluate_batch(SK_SM, inputs)
