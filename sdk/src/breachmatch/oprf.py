"""RFC 9497 OPRF, suite ristretto255-SHA512: the group glue shared by both modes.

Every token in breachmatch is an output of this function under the operator's
secret key, so it must be the standard one, byte for byte: the test suite checks
the RFC's Appendix A vectors. Function names follow the RFC (snake_cased);
all values are bytes: 32-byte little-endian scalars, 32-byte canonical
ristretto255 encodings, 64-byte outputs.

breachmatch runs mode 0x01 (VOPRF, `VOPRF`): the matcher proves every batch
it evaluates (`breachmatch.voprf`). The mode is part of the context string,
so it changes HashToGroup and with it every output; mode 0x00 (`OPRF`) stays
here for the RFC's A.1.1 vectors and for benchmarks, never for tokens.

Group arithmetic is libsodium's (through rbcl); the only thing written here is
the glue the RFC specifies: expand_message_xmd (RFC 9380 §5.3.1), the DSTs, the
key derivation loop and the Finalize hash. Nothing here invents a primitive.

libsodium accepts ristretto255 encodings with the top bit set (it masks that
bit before its canonicity check); RFC 9496 §4.3.1 says such an encoding is not
canonical and must be refused, so every decoding here checks the bit first
(`validate_element`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import rbcl


def _remove_rbcl_library_copy() -> None:
    """Delete the copy of libsodium that importing rbcl leaves in the temporary directory.

    rbcl bundles libsodium as data, writes it to a new temporary file at
    every import (``rbcl._sodium.lib_path``, 2.7 MB) and never deletes it:
    every process that does OPRF work — each check's worker processes, each
    service start — would leave one behind for good. Once loaded, the file is
    no longer needed (the mapping outlives the name), so it is removed here.
    """
    loaded = sys.modules.get("rbcl._sodium")
    path = getattr(loaded, "lib_path", None)
    if isinstance(path, str):
        with contextlib.suppress(OSError):
            Path(path).unlink()


_remove_rbcl_library_copy()

MODE_OPRF = 0x00
MODE_VOPRF = 0x01
SUITE_ID = b"ristretto255-SHA512"

ELEMENT_SIZE = 32
SCALAR_SIZE = 32
OUTPUT_SIZE = 64


@dataclass(frozen=True, slots=True)
class Suite:
    """ristretto255-SHA512 in one mode: its context string and the DSTs made from it."""

    mode: int
    context: bytes
    hash_to_group_dst: bytes
    hash_to_scalar_dst: bytes
    derive_key_pair_dst: bytes
    #: "Seed-" || contextString, for the composite seed of a batch proof (RFC 9497 §2.2.1).
    seed_dst: bytes

    @classmethod
    def for_mode(cls, mode: int) -> Suite:
        context = b"OPRFV1-" + mode.to_bytes(1, "big") + b"-" + SUITE_ID
        return cls(
            mode=mode,
            context=context,
            hash_to_group_dst=b"HashToGroup-" + context,
            hash_to_scalar_dst=b"HashToScalar-" + context,
            derive_key_pair_dst=b"DeriveKeyPair" + context,
            seed_dst=b"Seed-" + context,
        )


#: Mode 0x00: the RFC's A.1.1 vectors and benchmarks only.
OPRF = Suite.for_mode(MODE_OPRF)
#: Mode 0x01: what breachmatch's tokens are.
VOPRF = Suite.for_mode(MODE_VOPRF)
CONTEXT_STRING = OPRF.context

_IDENTITY = bytes(ELEMENT_SIZE)
_ZERO_SCALAR = bytes(SCALAR_SIZE)
_SHA512_BLOCK = 128
_SHA512_OUT = 64

_T = TypeVar("_T")

#: Below this many elements a process pool costs more than it saves.
PARALLEL_THRESHOLD = 2048


class OprfError(ValueError):
    """Base class for OPRF failures; messages never contain inputs."""


class InvalidInputError(OprfError):
    """HashToGroup mapped an input to the identity (RFC 9497 §3.3.1)."""


class DeriveKeyPairError(OprfError):
    """No non-zero scalar after 256 counters (RFC 9497 §3.2.1)."""


class InvalidElementError(OprfError):
    """A received group element is not a canonical, non-identity encoding.

    `index` is the element's position in its batch so a caller (the matcher)
    can name it in an INVALID_ARGUMENT status.
    """

    def __init__(self, reason: str, index: int | None = None) -> None:
        where = f" at index {index}" if index is not None else ""
        super().__init__(f"invalid group element{where}: {reason}")
        self.reason = reason
        self.index = index

    def __reduce__(self) -> tuple[type[InvalidElementError], tuple[str, int | None]]:
        # Rebuild from the fields when crossing a process pool, not from the message.
        return (InvalidElementError, (self.reason, self.index))


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 §5.3.1 with SHA-512."""
    if len(dst) > 255:
        raise OprfError("DST longer than 255 bytes")
    ell = -(-len_in_bytes // _SHA512_OUT)
    if ell > 255 or len_in_bytes > 65535:
        raise OprfError("requested length too large for expand_message_xmd")
    dst_prime = dst + _i2osp(len(dst), 1)
    z_pad = bytes(_SHA512_BLOCK)
    b_0 = hashlib.sha512(z_pad + msg + _i2osp(len_in_bytes, 2) + _i2osp(0, 1) + dst_prime).digest()
    b_i = hashlib.sha512(b_0 + _i2osp(1, 1) + dst_prime).digest()
    uniform = bytearray(b_i)
    for i in range(2, ell + 1):
        b_i = hashlib.sha512(
            bytes(x ^ y for x, y in zip(b_0, b_i, strict=True)) + _i2osp(i, 1) + dst_prime
        ).digest()
        uniform += b_i
    return bytes(uniform[:len_in_bytes])


#: SHA-512 with Z_pad (one zero block) already absorbed: every expansion starts there.
_ZERO_BLOCK = hashlib.sha512(bytes(_SHA512_BLOCK))


@functools.cache
def _xmd_64_suffixes(dst: bytes) -> tuple[bytes, bytes]:
    """What follows msg in b_0, and b_0 in b_1, for a 64-byte expansion under `dst`."""
    if len(dst) > 255:
        raise OprfError("DST longer than 255 bytes")
    dst_prime = dst + _i2osp(len(dst), 1)
    return _i2osp(_SHA512_OUT, 2) + _i2osp(0, 1) + dst_prime, _i2osp(1, 1) + dst_prime


def expand_message_xmd_64(msg: bytes, dst: bytes) -> bytes:
    """`expand_message_xmd(msg, dst, 64)`: the only length the suite asks for, on the hot path.

    64 bytes are one SHA-512 output, so ell = 1 and the output is b_1. The
    general form pays ~1 µs per call for concatenating and hashing Z_pad and
    building the suffixes; this one copies a hash state that has absorbed
    Z_pad and reuses the suffixes, which is half the cost of every
    HashToGroup and HashToScalar (two per element on the client). Loops
    take the expansion for their DST once (`xmd_64_for`).
    """
    return xmd_64_for(dst)(msg)


@functools.cache
def xmd_64_for(dst: bytes) -> Callable[[bytes], bytes]:
    """`expand_message_xmd_64` under one DST, with its suffixes looked up once."""
    first, second = _xmd_64_suffixes(dst)
    zero_block = _ZERO_BLOCK
    sha512 = hashlib.sha512

    def expand(msg: bytes) -> bytes:
        state = zero_block.copy()
        state.update(msg + first)
        return sha512(state.digest() + second).digest()

    return expand


def hash_to_group(data: bytes, suite: Suite = VOPRF) -> bytes:
    """hash_to_ristretto255 (RFC 9380 App. B / RFC 9496 §4.3.4) under the suite's DST."""
    return bytes(
        rbcl.crypto_core_ristretto255_from_hash(
            expand_message_xmd_64(data, suite.hash_to_group_dst)
        )
    )


def hash_to_scalar(data: bytes, dst: bytes = VOPRF.hash_to_scalar_dst) -> bytes:
    """64 uniform bytes reduced mod the group order (little-endian)."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(expand_message_xmd_64(data, dst)))


def validate_element(element: bytes, index: int | None = None) -> bytes:
    """Reject anything but a canonical encoding of a non-identity element.

    Called on every element that crosses a trust boundary (blinded elements at
    the matcher, evaluated elements and public keys at the client): a
    malformed or identity element would otherwise make the server's answer
    reveal information about its key, or silently produce garbage tokens. The
    top-bit check comes first because libsodium would accept such an
    encoding as the element without the bit — two byte strings for one
    element would break every transcript that hashes encodings.
    """
    if not isinstance(element, bytes | bytearray) or len(element) != ELEMENT_SIZE:
        raise InvalidElementError(f"expected {ELEMENT_SIZE} bytes", index)
    element = bytes(element)
    if element[-1] & 0x80:
        raise InvalidElementError("not a canonical ristretto255 encoding (top bit set)", index)
    if element == _IDENTITY:
        raise InvalidElementError("identity element", index)
    if not rbcl.crypto_core_ristretto255_is_valid_point(element):
        raise InvalidElementError("not a canonical ristretto255 encoding", index)
    return element


def times_received(scalar: bytes, element: bytes, index: int | None = None) -> bytes:
    """scalar·element for an element received over the wire, validated by the product itself.

    libsodium decodes the element inside the multiplication and fails on
    anything `validate_element` refuses except a set top bit (which it
    masks): a non-canonical or off-curve encoding, or the identity (whose
    product is the identity). So the top bit is checked here and the rest is
    left to the multiplication, instead of decoding every element twice
    (`is_valid_point` costs ~5 µs, 2-5% of an element's work). Only when the
    product fails does `validate_element` run, to raise with the reason; an
    element it accepts can only have failed through a zero scalar (a
    composite weight, probability 2⁻²⁵²), whose product is the identity.
    """
    if isinstance(element, bytes) and len(element) == ELEMENT_SIZE and not element[-1] & 0x80:
        try:
            return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, element))
        except RuntimeError:
            pass
    checked = validate_element(element, index)
    return bytes(rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero(scalar, checked))


def is_canonical_scalar(scalar: bytes) -> bool:
    """True for 32 little-endian bytes below the group order (RFC 9497 DeserializeScalar)."""
    return (
        len(scalar) == SCALAR_SIZE
        and bytes(rbcl.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32))) == scalar
    )


def _validate_scalar(scalar: bytes, what: str) -> bytes:
    if len(scalar) != SCALAR_SIZE or scalar == _ZERO_SCALAR:
        raise OprfError(f"{what} must be a non-zero {SCALAR_SIZE}-byte scalar")
    if not is_canonical_scalar(scalar):
        raise OprfError(f"{what} is not reduced modulo the group order")
    return bytes(scalar)


def _scalar_mult(scalar: bytes, element: bytes) -> bytes:
    # libsodium refuses products that land on the identity; with a validated
    # non-identity element and a non-zero scalar in a prime-order group that
    # cannot happen, so a failure here is an invariant violation.
    return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, element))


def derive_key_pair(seed: bytes, info: bytes, suite: Suite = VOPRF) -> tuple[bytes, bytes]:
    """DeriveKeyPair(seed, info) -> (skS, pkS), RFC 9497 §3.2.1."""
    if len(seed) != 32:
        raise OprfError("seed must be 32 bytes")
    derive_input = seed + _i2osp(len(info), 2) + info
    for counter in range(256):
        sk = hash_to_scalar(derive_input + _i2osp(counter, 1), suite.derive_key_pair_dst)
        if sk != _ZERO_SCALAR:
            return sk, public_key(sk)
    raise DeriveKeyPairError("DeriveKeyPair exhausted its counter")


def public_key(sk: bytes) -> bytes:
    """pkS = skS * G: the key commitment a VOPRF proof is checked against."""
    return bytes(rbcl.crypto_scalarmult_ristretto255_base(_validate_scalar(sk, "secret key")))


def random_key_pair() -> tuple[bytes, bytes]:
    """A fresh key pair from 32 bytes of OS randomness (via DeriveKeyPair)."""
    return derive_key_pair(os.urandom(32), b"breachmatch oprf key")


def _input_element(data: bytes, suite: Suite) -> bytes:
    element = hash_to_group(data, suite)
    if element == _IDENTITY:
        raise InvalidInputError("input maps to the identity element")
    return element


def blind(data: bytes, blind: bytes | None = None, suite: Suite = VOPRF) -> tuple[bytes, bytes]:
    """Blind(input) -> (blind, blindedElement), RFC 9497 §3.3.1.

    `blind` is only for test vectors; production callers let it be random.
    """
    r = (
        _validate_scalar(blind, "blind")
        if blind is not None
        else bytes(rbcl.crypto_core_ristretto255_scalar_random())
    )
    return r, _scalar_mult(r, _input_element(data, suite))


def blind_evaluate(sk: bytes, blinded_element: bytes) -> bytes:
    """BlindEvaluate(skS, blindedElement) -> evaluatedElement, RFC 9497 §3.3.1."""
    return _scalar_mult(sk, validate_element(blinded_element))


def _finalize_hash(data: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(
        _i2osp(len(data), 2) + data + _i2osp(len(unblinded), 2) + unblinded + b"Finalize"
    ).digest()


def finalize(data: bytes, blind: bytes, evaluated_element: bytes) -> bytes:
    """Finalize(input, blind, evaluatedElement) -> output, RFC 9497 §3.3.1 (mode 0x00).

    Mode 0x01's Finalize is this after `voprf.verify_proof`; the hash has no
    context string, so it is the same in both modes.
    """
    inverse = bytes(rbcl.crypto_core_ristretto255_scalar_invert(blind))
    unblinded = _scalar_mult(inverse, validate_element(evaluated_element))
    return _finalize_hash(data, unblinded)


def evaluate(sk: bytes, data: bytes, suite: Suite = VOPRF) -> bytes:
    """Evaluate(skS, input) -> output: the server-side unblinded PRF, RFC 9497 §3.3.1."""
    return _finalize_hash(data, _scalar_mult(sk, _input_element(data, suite)))


# --- batch forms -----------------------------------------------------------


def blind_batch(inputs: Sequence[bytes], suite: Suite = VOPRF) -> tuple[list[bytes], list[bytes]]:
    """Blind many inputs; returns (blinds, blinded elements) in input order.

    `blind` with random blinds, as one loop around libsodium's calls (the
    client blinds every distinct match key of a first check): the per-call
    wrappers and copies of `blind` would cost a tenth of the work.
    """
    expand = xmd_64_for(suite.hash_to_group_dst)
    from_hash = rbcl.crypto_core_ristretto255_from_hash
    scalar_mult = rbcl.crypto_scalarmult_ristretto255
    random_scalar = rbcl.crypto_core_ristretto255_scalar_random
    blinds = [random_scalar() for _ in inputs]
    blinded: list[bytes] = []
    for data, r in zip(inputs, blinds, strict=True):
        element = from_hash(expand(data))
        if element == _IDENTITY:
            raise InvalidInputError("input maps to the identity element")
        blinded.append(scalar_mult(r, element))
    return blinds, blinded


def invert_batch(scalars: Sequence[bytes]) -> list[bytes]:
    """The inverse of every (non-zero) scalar, with one inversion for the batch.

    Montgomery's trick: a scalar inversion costs libsodium ~50 multiplications'
    worth of time, so inverting the running product once and walking back
    costs three multiplications per scalar instead.
    """
    if not scalars:
        return []
    mul = rbcl.crypto_core_ristretto255_scalar_mul
    prefix = [bytes(scalars[0])]
    for scalar in scalars[1:]:
        prefix.append(mul(prefix[-1], scalar))
    inverse = rbcl.crypto_core_ristretto255_scalar_invert(prefix[-1])
    out = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        out[i] = mul(inverse, prefix[i - 1])
        inverse = mul(inverse, scalars[i])
    out[0] = inverse
    return out


def blind_evaluate_batch(sk: bytes, blinded_elements: Sequence[bytes]) -> list[bytes]:
    """BlindEvaluate a batch; an invalid element raises with its index."""
    checked = [validate_element(e, i) for i, e in enumerate(blinded_elements)]
    return [_scalar_mult(sk, e) for e in checked]


def finalize_batch(
    inputs: Sequence[bytes], blinds: Sequence[bytes], evaluated_elements: Sequence[bytes]
) -> list[bytes]:
    """Finalize a batch (mode 0x00: nothing is verified); one scalar inversion in all."""
    if not len(inputs) == len(blinds) == len(evaluated_elements):
        raise OprfError("finalize_batch needs equally long inputs, blinds and elements")
    checked = [validate_element(e, i) for i, e in enumerate(evaluated_elements)]
    return unblind_batch(inputs, blinds, checked)


def unblind_batch(
    inputs: Sequence[bytes], blinds: Sequence[bytes], checked_elements: Sequence[bytes]
) -> list[bytes]:
    """The Finalize hash of each input with its element unblinded; elements already validated.

    `_finalize_hash` of `_scalar_mult`, inlined: this runs once per key of a first check.
    """
    scalar_mult = rbcl.crypto_scalarmult_ristretto255
    sha512 = hashlib.sha512
    element_length = _i2osp(ELEMENT_SIZE, 2)
    return [
        sha512(
            len(data).to_bytes(2, "big")
            + data
            + element_length
            + scalar_mult(inverse, element)
            + b"Finalize"
        ).digest()
        for data, inverse, element in zip(
            inputs, invert_batch(blinds), checked_elements, strict=True
        )
    ]


def evaluate_batch(sk: bytes, inputs: Sequence[bytes], suite: Suite = VOPRF) -> list[bytes]:
    """`evaluate` of every input: the same bytes, with less work around libsodium's.

    Ingest evaluates millions of inputs and its cost per input is measured
    against libsodium's hash-to-group plus scalar multiplication alone, so
    the loop calls libsodium and the 64-byte expansion (`expand_message_xmd_64`)
    directly, without the per-call wrappers and copies of `evaluate`.
    `test_oprf` holds this to `evaluate` and the RFC's A.1.1 vectors.
    """
    dst = suite.hash_to_group_dst
    element_length = _i2osp(ELEMENT_SIZE, 2)
    sha512 = hashlib.sha512
    from_hash = rbcl.crypto_core_ristretto255_from_hash
    scalar_mult = rbcl.crypto_scalarmult_ristretto255
    outputs: list[bytes] = []
    for data in inputs:
        element = from_hash(expand_message_xmd_64(data, dst))
        if element == _IDENTITY:
            raise InvalidInputError("input maps to the identity element")
        evaluated = scalar_mult(sk, element)
        outputs.append(
            sha512(_i2osp(len(data), 2) + data + element_length + evaluated + b"Finalize").digest()
        )
    return outputs


def evaluate_batch_parallel(
    sk: bytes, inputs: Sequence[bytes], executor: Executor | None = None, workers: int = 0
) -> list[bytes]:
    """`evaluate_batch` spread over processes (ingest: millions of inputs).

    Pass a long-lived executor to amortise process start-up; without one a
    pool of `workers` (default: all cores) is made for this call. Small
    batches run inline because pickling costs more than it saves.
    """
    return [
        output
        for outputs in run_parallel(_evaluate_slice, sk, inputs, executor, workers)
        for output in outputs
    ]


def _evaluate_slice(sk: bytes, items: Sequence[bytes], offset: int) -> list[bytes]:
    return evaluate_batch(sk, items)


def run_parallel(
    worker: Callable[[bytes, Sequence[bytes], int], _T],
    sk: bytes,
    items: Sequence[bytes],
    executor: Executor | None,
    workers: int,
) -> list[_T]:
    """`worker(sk, slice, offset)` over slices of `items` on a process pool, in order.

    Small batches (or one worker) run inline as a single slice.
    """
    n_workers = workers or os.cpu_count() or 1
    if len(items) < PARALLEL_THRESHOLD or n_workers == 1:
        return [worker(sk, items, 0)]
    pool = executor or _process_pool(n_workers)
    try:
        size = -(-len(items) // (n_workers * 4))
        futures = [
            pool.submit(worker, sk, list(items[start : start + size]), start)
            for start in range(0, len(items), size)
        ]
        return [future.result() for future in futures]
    finally:
        if executor is None:
            pool.shutdown()


def _process_pool(workers: int) -> Executor:
    # Imported here: it brings in multiprocessing, which the client's worker
    # processes (`breachmatch.oprf_worker`) import this module without needing.
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers)
