"""The client's OPRF work as jobs on bytes, and the worker process that runs them.

A first check blinds and finalizes every distinct match key: libsodium calls
wrapped in Python glue that holds the GIL, so it runs in worker processes
(`breachmatch.client.workers`). Everything that crosses to a worker is one
bytes blob per job, framed here:

* a job is ``op (1 byte) | length (4) | payload``, an answer
  ``status (1) | length (4) | payload``;
* `BLIND`: packed inputs → the batch's blinds then its blinded elements,
  32 bytes each (`blind_job`);
* `FINALIZE`: the public key, the proof, the blinds, blinded and evaluated
  elements and the packed inputs → 64-byte outputs, only if the batch's
  proof verifies (`finalize_job`).

No pickling and no lists of objects: a batch of 1,024 inputs is two pipe
writes each way.

``python -m breachmatch.oprf_worker`` is the worker: it imports this module,
`oprf` and `voprf` and nothing else, instead of what a spawned
multiprocessing worker imports (the calling script, the CLI and all of gRPC:
~0.5 s of CPU per worker). It serves jobs from stdin until stdin ends —
which is also how it ends with its parent: when the parent dies, however it
dies, the kernel closes the pipe's write end and the worker's next read
returns nothing. Ctrl-C is the parent's to handle: the parent starts the
worker in a process group of its own, which a terminal's Ctrl-C does not
reach.

Errors cross as a status byte and a message (messages never carry inputs):
`STATUS_UNVERIFIABLE` becomes `voprf.VerifyError` again on the parent's side,
`STATUS_OPRF_ERROR` an `oprf.OprfError`; anything else is an internal error.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import IO

from breachmatch import oprf, voprf
from breachmatch.oprf import ELEMENT_SIZE, SCALAR_SIZE

BLIND = 1
FINALIZE = 2

STATUS_OK = 0
STATUS_UNVERIFIABLE = 1
STATUS_OPRF_ERROR = 2
STATUS_INTERNAL = 3

_FRAME = struct.Struct("<BI")
_COUNT = struct.Struct("<I")
_FINALIZE_HEAD = struct.Struct(f"<{ELEMENT_SIZE}s{voprf.PROOF_SIZE}sI")


class WorkerProtocolError(ValueError):
    """A job not framed as this module frames them: a bug on our side, never the matcher's.

    Not an `oprf.OprfError`, so that it is reported as an internal error
    rather than as an unverifiable evaluation.
    """


def pack_inputs(inputs: Sequence[bytes]) -> bytes:
    """count | each length (u32) | the inputs, concatenated."""
    count = len(inputs)
    return b"".join((_COUNT.pack(count), struct.pack(f"<{count}I", *map(len, inputs)), *inputs))


def unpack_inputs(blob: bytes | memoryview) -> list[bytes]:
    view = memoryview(blob)
    (count,) = _COUNT.unpack_from(view)
    table = _COUNT.size + 4 * count
    if len(view) < table:
        raise WorkerProtocolError("packed inputs end inside their length table")
    ends = list(accumulate(struct.unpack_from(f"<{count}I", view, _COUNT.size), initial=table))
    if ends[-1] != len(view):
        raise WorkerProtocolError("packed inputs do not add up to their blob")
    data = bytes(view)
    return [data[start:end] for start, end in pairwise(ends)]


def split(blob: bytes, size: int) -> list[bytes]:
    """A blob of fixed-size values as a list of them."""
    if len(blob) % size:
        raise WorkerProtocolError(f"a blob of {len(blob)} bytes is not made of {size}-byte values")
    return [blob[at : at + size] for at in range(0, len(blob), size)]


# --- the two jobs ---------------------------------------------------------------


def blind_job(packed_inputs: bytes) -> bytes:
    """Blind every input under fresh random blinds: blinds || blinded elements."""
    blinds, blinded = oprf.blind_batch(unpack_inputs(packed_inputs))
    return b"".join(blinds) + b"".join(blinded)


def finalize_request(
    public_key: bytes,
    proof: bytes,
    blinded: bytes,
    evaluated: Sequence[bytes],
    packed_inputs: bytes,
) -> bytes:
    """A `FINALIZE` payload; `blinded` is the `blind_job` answer the batch was sent with.

    Every evaluated element must be 32 bytes (checked here, before they are
    joined, so that a matcher cannot shift one element's bytes into the
    next); so must the proof, or the batch is unverifiable.
    """
    count = len(evaluated)
    if len(public_key) != ELEMENT_SIZE:
        raise oprf.InvalidElementError(f"expected {ELEMENT_SIZE} bytes")
    if len(blinded) != (SCALAR_SIZE + ELEMENT_SIZE) * count:
        raise oprf.OprfError("finalize needs as many evaluated elements as blinded ones")
    if any(len(element) != ELEMENT_SIZE for element in evaluated):
        raise oprf.InvalidElementError(f"expected {ELEMENT_SIZE} bytes")
    if len(proof) != voprf.PROOF_SIZE:
        raise voprf.VerifyError(f"the batch's proof is not {voprf.PROOF_SIZE} bytes")
    head = _FINALIZE_HEAD.pack(public_key, proof, count)
    return b"".join((head, blinded, *evaluated, packed_inputs))


def finalize_job(payload: bytes) -> bytes:
    """Verify the batch's proof, then unblind: outputs of 64 bytes each, in order."""
    if len(payload) < _FINALIZE_HEAD.size:
        raise WorkerProtocolError("a finalize job ends inside its header")
    public_key, proof, count = _FINALIZE_HEAD.unpack_from(payload)
    parts = [SCALAR_SIZE * count, ELEMENT_SIZE * count, ELEMENT_SIZE * count]
    ends = list(accumulate(parts, initial=_FINALIZE_HEAD.size))
    if len(payload) < ends[-1]:
        raise WorkerProtocolError("a finalize job ends inside its elements")
    blinds, blinded, evaluated = (payload[start:end] for start, end in pairwise(ends))
    inputs = unpack_inputs(memoryview(payload)[ends[-1] :])
    if len(inputs) != count:
        raise WorkerProtocolError("a finalize job's parts disagree on the batch size")
    outputs = voprf.finalize_batch(
        public_key,
        inputs,
        split(blinds, SCALAR_SIZE),
        split(blinded, ELEMENT_SIZE),
        split(evaluated, ELEMENT_SIZE),
        proof,
    )
    return b"".join(outputs)


_JOBS = {BLIND: blind_job, FINALIZE: finalize_job}


def run_job(op: int, payload: bytes) -> bytes:
    """One job in this process (the parent runs small checks this way, without workers)."""
    job = _JOBS.get(op)
    if job is None:
        raise WorkerProtocolError(f"unknown job {op}")
    return job(payload)


# --- the worker process ---------------------------------------------------------


def frame(kind: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


def read_frame(stream: IO[bytes]) -> tuple[int, bytes] | None:
    """The next frame, or None when the stream ended cleanly between frames."""
    head = stream.read(_FRAME.size)
    if not head:
        return None
    if len(head) != _FRAME.size:
        raise EOFError("the stream ended inside a frame header")
    kind, length = _FRAME.unpack(head)
    payload = stream.read(length)
    if len(payload) != length:
        raise EOFError("the stream ended inside a frame")
    return kind, payload


def answer(op: int, payload: bytes) -> bytes:
    """The framed answer to one job: its result, or the status of its failure."""
    try:
        return frame(STATUS_OK, run_job(op, payload))
    except voprf.VerifyError as exc:
        return frame(STATUS_UNVERIFIABLE, str(exc).encode())
    except oprf.OprfError as exc:
        return frame(STATUS_OPRF_ERROR, str(exc).encode())
    except Exception as exc:  # a bug: named by type only, the parent raises it
        return frame(STATUS_INTERNAL, type(exc).__name__.encode())


def serve(jobs: IO[bytes], answers: IO[bytes]) -> None:
    """Answer jobs until `jobs` ends (the parent closed it, or died)."""
    while True:
        try:
            job = read_frame(jobs)
        except EOFError:
            return  # the parent died while writing a job
        if job is None:
            return
        try:
            answers.write(answer(*job))
            answers.flush()
        except BrokenPipeError:
            return  # the parent is gone: nobody waits for the answer


def main() -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
