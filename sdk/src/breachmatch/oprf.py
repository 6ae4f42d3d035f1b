"""RFC 9497 OPRF, mode 0x00 (OPRF), suite ristretto255-SHA512.

Every token in breachmatch is an output of this function under the operator's
secret key, so it must be the standard one, byte for byte: the test suite checks
the RFC's Appendix A vectors. Function names follow the RFC (snake_cased);
all values are bytes: 32-byte little-endian scalars, 32-byte canonical
ristretto255 encodings, 64-byte outputs.

Group arithmetic is libsodium's (through rbcl); the only thing written here is
the glue the RFC specifies: expand_message_xmd (RFC 9380 §5.3.1), the DSTs, the
key derivation loop and the Finalize hash. Nothing here invents a primitive.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor

import rbcl

MODE_OPRF = 0x00
SUITE_ID = b"ristretto255-SHA512"
CONTEXT_STRING = b"OPRFV1-" + MODE_OPRF.to_bytes(1, "big") + b"-" + SUITE_ID

ELEMENT_SIZE = 32
SCALAR_SIZE = 32
OUTPUT_SIZE = 64

_HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
_HASH_TO_SCALAR_DST = b"HashToScalar-" + CONTEXT_STRING
_DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING
_IDENTITY = bytes(ELEMENT_SIZE)
_ZERO_SCALAR = bytes(SCALAR_SIZE)
_SHA512_BLOCK = 128
_SHA512_OUT = 64

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


def hash_to_group(data: bytes) -> bytes:
    """hash_to_ristretto255 (RFC 9380 App. B / RFC 9496 §4.3.4) under the OPRF DST."""
    return bytes(
        rbcl.crypto_core_ristretto255_from_hash(expand_message_xmd(data, _HASH_TO_GROUP_DST, 64))
    )


def hash_to_scalar(data: bytes, dst: bytes = _HASH_TO_SCALAR_DST) -> bytes:
    """64 uniform bytes reduced mod the group order (little-endian)."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_reduce(expand_message_xmd(data, dst, 64)))


def validate_element(element: bytes, index: int | None = None) -> bytes:
    """Reject anything but a canonical encoding of a non-identity element.

    Called on every element that crosses a trust boundary: a malformed or
    identity element would otherwise make the server's answer reveal
    information about its key, or silently produce garbage tokens.
    """
    if not isinstance(element, bytes | bytearray) or len(element) != ELEMENT_SIZE:
        raise InvalidElementError(f"expected {ELEMENT_SIZE} bytes", index)
    element = bytes(element)
    if element == _IDENTITY:
        raise InvalidElementError("identity element", index)
    if not rbcl.crypto_core_ristretto255_is_valid_point(element):
        raise InvalidElementError("not a canonical ristretto255 encoding", index)
    return element


def _validate_scalar(scalar: bytes, what: str) -> bytes:
    if len(scalar) != SCALAR_SIZE or scalar == _ZERO_SCALAR:
        raise OprfError(f"{what} must be a non-zero {SCALAR_SIZE}-byte scalar")
    if bytes(rbcl.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32))) != scalar:
        raise OprfError(f"{what} is not reduced modulo the group order")
    return bytes(scalar)


def _scalar_mult(scalar: bytes, element: bytes) -> bytes:
    # libsodium refuses products that land on the identity; with a validated
    # non-identity element and a non-zero scalar in a prime-order group that
    # cannot happen, so a failure here is an invariant violation.
    return bytes(rbcl.crypto_scalarmult_ristretto255(scalar, element))


def derive_key_pair(seed: bytes, info: bytes) -> tuple[bytes, bytes]:
    """DeriveKeyPair(seed, info) -> (skS, pkS), RFC 9497 §3.2.1."""
    if len(seed) != 32:
        raise OprfError("seed must be 32 bytes")
    derive_input = seed + _i2osp(len(info), 2) + info
    for counter in range(256):
        sk = hash_to_scalar(derive_input + _i2osp(counter, 1), _DERIVE_KEY_PAIR_DST)
        if sk != _ZERO_SCALAR:
            return sk, bytes(rbcl.crypto_scalarmult_ristretto255_base(sk))
    raise DeriveKeyPairError("DeriveKeyPair exhausted its counter")


def random_key_pair() -> tuple[bytes, bytes]:
    """A fresh key pair from 32 bytes of OS randomness (via DeriveKeyPair)."""
    return derive_key_pair(os.urandom(32), b"breachmatch oprf key")


def _input_element(data: bytes) -> bytes:
    element = hash_to_group(data)
    if element == _IDENTITY:
        raise InvalidInputError("input maps to the identity element")
    return element


def blind(data: bytes, blind: bytes | None = None) -> tuple[bytes, bytes]:
    """Blind(input) -> (blind, blindedElement), RFC 9497 §3.3.1.

    `blind` is only for test vectors; production callers let it be random.
    """
    r = (
        _validate_scalar(blind, "blind")
        if blind is not None
        else bytes(rbcl.crypto_core_ristretto255_scalar_random())
    )
    return r, _scalar_mult(r, _input_element(data))


def blind_evaluate(sk: bytes, blinded_element: bytes) -> bytes:
    """BlindEvaluate(skS, blindedElement) -> evaluatedElement, RFC 9497 §3.3.1."""
    return _scalar_mult(sk, validate_element(blinded_element))


def _finalize_hash(data: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(
        _i2osp(len(data), 2) + data + _i2osp(len(unblinded), 2) + unblinded + b"Finalize"
    ).digest()


def finalize(data: bytes, blind: bytes, evaluated_element: bytes) -> bytes:
    """Finalize(input, blind, evaluatedElement) -> output, RFC 9497 §3.3.1."""
    inverse = bytes(rbcl.crypto_core_ristretto255_scalar_invert(blind))
    unblinded = _scalar_mult(inverse, validate_element(evaluated_element))
    return _finalize_hash(data, unblinded)


def evaluate(sk: bytes, data: bytes) -> bytes:
    """Evaluate(skS, input) -> output: the server-side unblinded PRF, RFC 9497 §3.3.1."""
    return _finalize_hash(data, _scalar_mult(sk, _input_element(data)))


# --- batch forms -----------------------------------------------------------


def blind_batch(inputs: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Blind many inputs; returns (blinds, blinded elements) in input order."""
    blinds: list[bytes] = []
    blinded: list[bytes] = []
    for data in inputs:
        r, element = blind(data)
        blinds.append(r)
        blinded.append(element)
    return blinds, blinded


def blind_evaluate_batch(sk: bytes, blinded_elements: Sequence[bytes]) -> list[bytes]:
    """BlindEvaluate a batch; an invalid element raises with its index."""
    checked = [validate_element(e, i) for i, e in enumerate(blinded_elements)]
    return [_scalar_mult(sk, e) for e in checked]


def finalize_batch(
    inputs: Sequence[bytes], blinds: Sequence[bytes], evaluated_elements: Sequence[bytes]
) -> list[bytes]:
    if not len(inputs) == len(blinds) == len(evaluated_elements):
        raise OprfError("finalize_batch needs equally long inputs, blinds and elements")
    checked = [validate_element(e, i) for i, e in enumerate(evaluated_elements)]
    return [finalize(d, r, e) for d, r, e in zip(inputs, blinds, checked, strict=True)]


def evaluate_batch(sk: bytes, inputs: Sequence[bytes]) -> list[bytes]:
    return [evaluate(sk, data) for data in inputs]


def evaluate_batch_parallel(
    sk: bytes, inputs: Sequence[bytes], executor: Executor | None = None, workers: int = 0
) -> list[bytes]:
    """`evaluate_batch` spread over processes (ingest: millions of inputs).

    Pass a long-lived executor to amortise process start-up; without one a
    pool of `workers` (default: all cores) is made for this call. Small
    batches run inline because pickling costs more than it saves.
    """
    return _run_parallel(_evaluate_slice, sk, inputs, executor, workers)


def blind_evaluate_batch_parallel(
    sk: bytes, blinded_elements: Sequence[bytes], executor: Executor | None = None, workers: int = 0
) -> list[bytes]:
    """`blind_evaluate_batch` spread over processes (the matcher's hot path).

    Validation happens inside the workers; an invalid element's index is
    reported relative to the whole batch.
    """
    return _run_parallel(_blind_evaluate_slice, sk, blinded_elements, executor, workers)


def _evaluate_slice(sk: bytes, items: Sequence[bytes], offset: int) -> list[bytes]:
    return evaluate_batch(sk, items)


def _blind_evaluate_slice(sk: bytes, items: Sequence[bytes], offset: int) -> list[bytes]:
    try:
        return blind_evaluate_batch(sk, items)
    except InvalidElementError as exc:
        index = None if exc.index is None else exc.index + offset
        raise InvalidElementError(exc.reason, index) from None


_SliceWorker = Callable[[bytes, Sequence[bytes], int], list[bytes]]


def _run_parallel(
    worker: _SliceWorker,
    sk: bytes,
    items: Sequence[bytes],
    executor: Executor | None,
    workers: int,
) -> list[bytes]:
    n_workers = workers or os.cpu_count() or 1
    if len(items) < PARALLEL_THRESHOLD or n_workers == 1:
        return worker(sk, items, 0)
    pool = executor or ProcessPoolExecutor(max_workers=n_workers)
    try:
        size = -(-len(items) // (n_workers * 4))
        futures = [
            pool.submit(worker, sk, list(items[start : start + size]), start)
            for start in range(0, len(items), size)
        ]
        out: list[bytes] = []
        for future in futures:
            out.extend(future.result())
        return out
    finally:
        if executor is None:
            pool.shutdown()
