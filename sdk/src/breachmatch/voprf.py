"""RFC 9497 mode 0x01 (VOPRF), ristretto255-SHA512: one DLEQ proof per batch.

Without a proof a hospital has to trust that the matcher evaluated its
blinded elements with the operator's published key. A matcher that used
another key — for one hospital, one batch or one element — would make
patients silently never match, or tag a hospital's queries for later
linking. With mode 0x01 the matcher returns, with every batch, a proof that
each evaluated element is the blinded element raised to the secret key
behind the public key pkS, and the client refuses the whole batch otherwise.

The proof is the RFC's batched form (§2.2): both sides fold the batch into
one pair of composite elements, M = Σ dᵢ·Cᵢ and Z = Σ dᵢ·Dᵢ, with weights dᵢ
hashed from the public key and every (Cᵢ, Dᵢ) pair, and prove/verify the one
discrete-log equality log_G(pkS) = log_M(Z). The server, holding the key,
uses the "fast" form Z = k·M (`compute_composites_fast`). A composite is a
multi-scalar multiplication; libsodium has none, so it is one scalar
multiplication and one addition per element (`_weighted_sum`) — the
measured cost is in ``bench/bench_core.py``.

Encodings are checked strictly (`oprf.validate_element`, canonical scalars)
before anything is hashed, so a transcript has one byte string per value.
Nothing here is secret except the server's key and the proof nonce; the
client's verification works on public values only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor

import rbcl

from breachmatch import oprf
from breachmatch.oprf import ELEMENT_SIZE, SCALAR_SIZE, VOPRF, InvalidElementError, OprfError

#: c || s, two 32-byte scalars (RFC 9497 §2.2.1).
PROOF_SIZE = 2 * SCALAR_SIZE
#: Composite weights are indexed with I2OSP(i, 2): one proof covers at most this many elements.
MAX_BATCH = 0xFFFF

_LEN_ELEMENT = ELEMENT_SIZE.to_bytes(2, "big")
_LEN_SEED = hashlib.sha512().digest_size.to_bytes(2, "big")
_HASH_TO_SCALAR_DST = VOPRF.hash_to_scalar_dst


class VerifyError(OprfError):
    """The proof does not show that the batch was evaluated under the committed key."""


def composite_seed(pk: bytes) -> bytes:
    """seed = Hash(I2OSP(len(Bm), 2) || Bm || I2OSP(len(seedDST), 2) || seedDST)."""
    dst = VOPRF.seed_dst
    return hashlib.sha512(_LEN_ELEMENT + pk + len(dst).to_bytes(2, "big") + dst).digest()


def _weighted_sum(weights: Sequence[bytes], elements: Sequence[bytes]) -> bytes:
    """Σ wᵢ·Eᵢ with libsodium's scalar multiplication and addition (elements already valid)."""
    mult = rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero
    return _sum(mult(weight, element) for weight, element in zip(weights, elements, strict=True))


def _sum(products: Iterable[bytes]) -> bytes:
    add = rbcl.crypto_core_ristretto255_add
    total = bytes(ELEMENT_SIZE)  # the identity
    for product in products:
        total = add(total, product)
    return bytes(total)


def _weights(seed: bytes, offset: int, cs: Sequence[bytes], ds: Sequence[bytes]) -> list[bytes]:
    """dᵢ = HashToScalar(seed, i, Cᵢ, Dᵢ, "Composite") (RFC 9497 §2.2.1) for each pair.

    `oprf.hash_to_scalar` inlined (both sides run this once per element).
    """
    expand = oprf.xmd_64_for(_HASH_TO_SCALAR_DST)
    reduce = rbcl.crypto_core_ristretto255_scalar_reduce
    head = _LEN_SEED + seed
    return [
        reduce(
            expand(
                b"".join(
                    (head, i.to_bytes(2, "big"), _LEN_ELEMENT, c, _LEN_ELEMENT, d, b"Composite")
                )
            )
        )
        for i, (c, d) in enumerate(zip(cs, ds, strict=True), offset)
    ]


def _check_batch(cs: Sequence[bytes], ds: Sequence[bytes]) -> None:
    if len(cs) != len(ds):
        raise OprfError("a proof needs as many evaluated elements as blinded ones")
    if not 0 < len(cs) <= MAX_BATCH:
        raise OprfError(f"a proof covers 1 to {MAX_BATCH} elements")


def compute_composites(pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes]) -> tuple[bytes, bytes]:
    """ComputeComposites(B, C, D) -> (M, Z): the verifier's form.

    The Cᵢ are the verifier's own blinded elements; each Dᵢ is as received,
    validated by its own multiplication (`oprf.times_received`): an invalid
    one raises `InvalidElementError` with its index.
    """
    _check_batch(cs, ds)
    weights = _weights(composite_seed(pk), 0, cs, ds)
    z = _sum(oprf.times_received(w, d, i) for i, (w, d) in enumerate(zip(weights, ds, strict=True)))
    return _weighted_sum(weights, cs), z


def compute_composites_fast(
    sk: bytes, pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """ComputeCompositesFast(k, B, C, D) -> (M, Z = k·M): the prover's form."""
    _check_batch(cs, ds)
    m = _weighted_sum(_weights(composite_seed(pk), 0, cs, ds), cs)
    return m, _times_key(sk, m)


def _times_key(sk: bytes, m: bytes) -> bytes:
    return bytes(rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(sk, m))


def _challenge(pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    transcript = b"".join(_LEN_ELEMENT + element for element in (pk, m, z, t2, t3))
    return oprf.hash_to_scalar(transcript + b"Challenge", _HASH_TO_SCALAR_DST)


def _prove(sk: bytes, pk: bytes, m: bytes, z: bytes, r: bytes | None) -> bytes:
    """[c, s] for composites already computed; `r` is only for test vectors."""
    nonce = bytes(rbcl.crypto_core_ristretto255_scalar_random()) if r is None else r
    t2 = bytes(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(nonce))
    t3 = bytes(rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(nonce, m))
    c = _challenge(pk, m, z, t2, t3)
    s = bytes(
        rbcl.crypto_core_ristretto255_scalar_sub(
            nonce, rbcl.crypto_core_ristretto255_scalar_mul(c, sk)
        )
    )
    return c + s


def generate_proof(
    sk: bytes, pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes], r: bytes | None = None
) -> bytes:
    """GenerateProof(k, G, B, C, D) -> c || s (RFC 9497 §2.2.1)."""
    m, z = compute_composites_fast(sk, pk, cs, ds)
    return _prove(sk, pk, m, z, r)


def verify_proof(pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes], proof: bytes) -> bool:
    """VerifyProof(G, B, C, D, proof) (RFC 9497 §2.2.2); False for anything malformed."""
    try:
        return _verify(pk, cs, ds, proof)
    except (OprfError, RuntimeError):  # rbcl raises RuntimeError where libsodium fails
        return False


def _verify(pk: bytes, cs: Sequence[bytes], ds: Sequence[bytes], proof: bytes) -> bool:
    """VerifyProof; an invalid evaluated element raises `InvalidElementError` (with why)."""
    if len(proof) != PROOF_SIZE:
        return False
    c, s = proof[:SCALAR_SIZE], proof[SCALAR_SIZE:]
    if not (oprf.is_canonical_scalar(c) and oprf.is_canonical_scalar(s)):
        return False
    mult = rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero
    add = rbcl.crypto_core_ristretto255_add
    oprf.validate_element(pk)
    m, z = compute_composites(pk, cs, ds)
    t2 = bytes(add(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(s), mult(c, pk)))
    t3 = bytes(add(mult(s, m), mult(c, z)))
    return hmac.compare_digest(_challenge(pk, m, z, t2, t3), c)


# --- the two sides of a batch --------------------------------------------------


def blind_evaluate_batch(
    sk: bytes, pk: bytes, blinded_elements: Sequence[bytes], r: bytes | None = None
) -> tuple[list[bytes], bytes]:
    """BlindEvaluate(skS, pkS, blindedElements) -> (evaluatedElements, proof), §3.3.2.

    An invalid blinded element raises `InvalidElementError` with its index.
    """
    evaluated, m = _evaluate_with_composite(composite_seed(pk), sk, blinded_elements, 0)
    return evaluated, _prove(sk, pk, m, _times_key(sk, m), r)


def blind_evaluate_batch_parallel(
    sk: bytes,
    pk: bytes,
    blinded_elements: Sequence[bytes],
    executor: Executor | None = None,
    workers: int = 0,
) -> tuple[list[bytes], bytes]:
    """`blind_evaluate_batch` with the batch split over processes (the matcher's hot path).

    Each slice evaluates its elements and sums its share of the composite M
    (the weights depend only on pkS, the global index and the pair), so the
    parent adds a few partial sums and proves once. An invalid element's
    index is reported relative to the whole batch.
    """
    if not 0 < len(blinded_elements) <= MAX_BATCH:
        raise OprfError(f"a proof covers 1 to {MAX_BATCH} elements")
    worker = functools.partial(_evaluate_with_composite, composite_seed(pk))
    evaluated: list[bytes] = []
    m = bytes(ELEMENT_SIZE)
    for part, partial_m in oprf.run_parallel(worker, sk, blinded_elements, executor, workers):
        evaluated.extend(part)
        m = bytes(rbcl.crypto_core_ristretto255_add(m, partial_m))
    return evaluated, _prove(sk, pk, m, _times_key(sk, m), None)


def _evaluate_with_composite(
    seed: bytes, sk: bytes, blinded_elements: Sequence[bytes], offset: int
) -> tuple[list[bytes], bytes]:
    """Evaluated elements and Σ dᵢ·Cᵢ over them, indices counted from `offset`."""
    if not 0 < len(blinded_elements) <= MAX_BATCH:
        raise OprfError(f"a proof covers 1 to {MAX_BATCH} elements")
    # Each element is validated by its evaluation; once that succeeded it is
    # a valid element, so the composite may multiply it unchecked.
    ds = [oprf.times_received(sk, e, offset + i) for i, e in enumerate(blinded_elements)]
    return ds, _weighted_sum(_weights(seed, offset, blinded_elements, ds), blinded_elements)


def finalize_batch(
    pk: bytes,
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    blinded_elements: Sequence[bytes],
    evaluated_elements: Sequence[bytes],
    proof: bytes,
) -> list[bytes]:
    """Finalize (mode 0x01, RFC 9497 §3.3.2): verify the batch's proof, then unblind.

    Raises `VerifyError` — and returns nothing of the batch — unless every
    evaluated element is proven to be its blinded element under pkS.
    """
    if not len(inputs) == len(blinds) == len(blinded_elements) == len(evaluated_elements):
        raise OprfError("finalize_batch needs equally long inputs, blinds and elements")
    try:
        verified = _verify(pk, blinded_elements, evaluated_elements, proof)
    except InvalidElementError as exc:
        raise VerifyError(f"the batch holds an invalid evaluated element: {exc.reason}") from None
    except (OprfError, RuntimeError):
        verified = False
    if not verified:
        raise VerifyError("the batch's proof does not verify under the committed public key")
    # Every Dᵢ went through `times_received` in the composite: all are valid elements.
    return oprf.unblind_batch(inputs, blinds, evaluated_elements)
