"""The client's OPRF jobs on bytes, and the worker processes that run them.

The jobs are checked against the RFC 9497 A.1.2 vectors and against the
unblinded PRF; the processes for real: jobs answered across the pipe, a
refusal crossing it as the same error, a worker that dies, and workers that
end with a parent killed outright.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from breachmatch import oprf, oprf_worker, voprf
from breachmatch.client.workers import (
    InlineWorkers,
    ProcessWorkers,
    WorkerFailedError,
    start_workers,
)

from .test_voprf import PK_SM, VECTORS, _hex

SECRET, PUBLIC = oprf.random_key_pair()
INPUTS = [f"breachmatch:v1:email:p{i}@example.dk".encode() for i in range(40)]
#: Seconds to wait for a process to end; generous for a loaded machine.
EXIT_TIMEOUT = 30


def _evaluate(blinds_then_blinded: bytes, secret: bytes = SECRET, public: bytes = PUBLIC):
    """What a matcher answers for a `blind_job` answer: (evaluated elements, proof)."""
    half = len(blinds_then_blinded) // 2
    return voprf.blind_evaluate_batch(
        secret, public, oprf_worker.split(blinds_then_blinded[half:], oprf.ELEMENT_SIZE)
    )


def _outputs(blob: bytes) -> list[bytes]:
    return oprf_worker.split(blob, oprf.OUTPUT_SIZE)


# --- the codec and the jobs ----------------------------------------------------------


@pytest.mark.parametrize("inputs", [[], [b""], INPUTS, [b"\xff" * 70_000, b"x"]])
def test_packed_inputs_round_trip(inputs):
    assert oprf_worker.unpack_inputs(oprf_worker.pack_inputs(inputs)) == inputs


@pytest.mark.parametrize(
    "blob",
    [
        b"\x02\x00\x00\x00\x01\x00\x00\x00",  # the length table ends early
        oprf_worker.pack_inputs([b"ab", b"c"])[:-1],  # the data ends early
        oprf_worker.pack_inputs([b"ab"]) + b"!",  # trailing bytes
    ],
)
def test_misframed_inputs_are_refused(blob):
    with pytest.raises(oprf_worker.WorkerProtocolError):
        oprf_worker.unpack_inputs(blob)


@pytest.mark.parametrize(
    ("inputs", "blinds", "blinded", "evaluated", "proof", "proof_scalar", "outputs"), VECTORS
)
def test_finalize_job_gives_the_rfc_outputs(
    inputs, blinds, blinded, evaluated, proof, proof_scalar, outputs
):
    job = oprf_worker.finalize_request(
        PK_SM,
        bytes.fromhex(proof),
        b"".join(_hex(blinds) + _hex(blinded)),
        _hex(evaluated),
        oprf_worker.pack_inputs(_hex(inputs)),
    )
    assert _outputs(oprf_worker.run_job(oprf_worker.FINALIZE, job)) == _hex(outputs)


def test_blind_then_finalize_jobs_give_the_prf():
    packed = oprf_worker.pack_inputs(INPUTS)
    blinded = oprf_worker.run_job(oprf_worker.BLIND, packed)
    assert len(blinded) == (oprf.SCALAR_SIZE + oprf.ELEMENT_SIZE) * len(INPUTS)
    evaluated, proof = _evaluate(blinded)
    job = oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated, packed)
    outputs = _outputs(oprf_worker.run_job(oprf_worker.FINALIZE, job))
    assert outputs == [oprf.evaluate(SECRET, data) for data in INPUTS]


def _honest_request() -> tuple[bytes, list[bytes], bytes, bytes]:
    packed = oprf_worker.pack_inputs(INPUTS)
    blinded = oprf_worker.blind_job(packed)
    evaluated, proof = _evaluate(blinded)
    return blinded, evaluated, proof, packed


def test_a_batch_evaluated_under_another_key_is_unverifiable():
    packed = oprf_worker.pack_inputs(INPUTS)
    blinded = oprf_worker.blind_job(packed)
    other_secret, other_public = oprf.random_key_pair()
    evaluated, proof = _evaluate(blinded, other_secret, other_public)
    job = oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated, packed)
    with pytest.raises(voprf.VerifyError):
        oprf_worker.run_job(oprf_worker.FINALIZE, job)


def test_elements_or_a_proof_of_the_wrong_size_are_refused_before_any_job():
    blinded, evaluated, proof, packed = _honest_request()
    # 31 + 33 bytes: joined, they would still fill two 32-byte slots.
    shifted = [evaluated[0][:-1], evaluated[1] + b"\0", *evaluated[2:]]
    with pytest.raises(oprf.InvalidElementError):
        oprf_worker.finalize_request(PUBLIC, proof, blinded, shifted, packed)
    with pytest.raises(voprf.VerifyError):
        oprf_worker.finalize_request(PUBLIC, proof[:-1], blinded, evaluated, packed)
    with pytest.raises(oprf.OprfError):
        oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated[:-1], packed)


def test_an_unknown_or_truncated_job_is_an_internal_error_not_a_refusal():
    blinded, evaluated, proof, packed = _honest_request()
    job = oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated, packed)
    for op, payload in ((99, b""), (oprf_worker.FINALIZE, job[:100])):
        answer = oprf_worker.answer(op, payload)
        assert answer[0] == oprf_worker.STATUS_INTERNAL
        assert b"WorkerProtocolError" in answer


# --- worker processes ----------------------------------------------------------------


@pytest.fixture
def workers():
    pool = ProcessWorkers(2)
    yield pool
    pool.close()


def test_workers_answer_jobs_as_this_process_would(workers):
    packed = oprf_worker.pack_inputs(INPUTS)
    blinded = workers.submit(oprf_worker.BLIND, packed).result(EXIT_TIMEOUT)
    evaluated, proof = _evaluate(blinded)
    job = oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated, packed)
    futures = [workers.submit(oprf_worker.FINALIZE, job) for _ in range(4)]
    expected = oprf_worker.run_job(oprf_worker.FINALIZE, job)
    assert [future.result(EXIT_TIMEOUT) for future in futures] == [expected] * 4
    assert _outputs(expected) == [oprf.evaluate(SECRET, data) for data in INPUTS]


def test_a_refusal_crosses_the_pipe_as_the_same_error(workers):
    blinded, evaluated, proof, packed = _honest_request()
    lie = [*evaluated[:-1], oprf.blind_evaluate(oprf.random_key_pair()[0], evaluated[-1])]
    job = oprf_worker.finalize_request(PUBLIC, proof, blinded, lie, packed)
    with pytest.raises(voprf.VerifyError, match="does not verify"):
        workers.submit(oprf_worker.FINALIZE, job).result(EXIT_TIMEOUT)
    # The worker serves on after a refusal.
    assert workers.submit(oprf_worker.BLIND, packed).result(EXIT_TIMEOUT)


def test_an_internal_error_in_a_worker_is_named_by_type(workers):
    with pytest.raises(WorkerFailedError, match="WorkerProtocolError"):
        workers.submit(99, b"").result(EXIT_TIMEOUT)


def test_a_worker_that_dies_fails_its_job_and_breaks_the_pool():
    pool = ProcessWorkers(1)
    try:
        os.kill(pool.pids[0], signal.SIGKILL)
        packed = oprf_worker.pack_inputs(INPUTS)
        with pytest.raises(WorkerFailedError, match="ended unexpectedly"):
            pool.submit(oprf_worker.BLIND, packed).result(EXIT_TIMEOUT)
        with pytest.raises(WorkerFailedError):
            pool.submit(oprf_worker.BLIND, packed).result(EXIT_TIMEOUT)
    finally:
        pool.close()


def test_close_cancels_jobs_no_worker_has_taken_and_finishes_the_others():
    pool = ProcessWorkers(1)
    long = pool.submit(oprf_worker.BLIND, oprf_worker.pack_inputs(INPUTS * 500))  # a second or so
    queued = [pool.submit(oprf_worker.BLIND, oprf_worker.pack_inputs(INPUTS)) for _ in range(10)]
    pool.close()
    # The feeder may or may not have taken the long job yet; either it finished or it was
    # cancelled. The others waited behind it, so none was taken.
    assert long.cancelled() or len(long.result()) == 64 * len(INPUTS) * 500
    assert all(future.cancelled() for future in queued)


def test_close_ends_the_worker_processes():
    pool = ProcessWorkers(2)
    processes = [psutil.Process(pid) for pid in pool.pids]
    pool.close()
    assert not any(process.is_running() for process in processes)


#: A parent that starts two workers, gives them work, says their pids, and then either
#: waits to be killed or, on Ctrl-C, has the workers answer one more job.
_PARENT = textwrap.dedent(
    """
    import sys
    from breachmatch import oprf_worker
    from breachmatch.client.workers import ProcessWorkers

    pool = ProcessWorkers(2)
    packed = oprf_worker.pack_inputs([b"input %d" % i for i in range(int(sys.argv[1]))])
    futures = [pool.submit(oprf_worker.BLIND, packed) for _ in range(4)]
    print(*pool.pids, flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        answered = [future.result() for future in futures]
        print(len(answered), flush=True)
        pool.close()
    """
)


def _parent(inputs: int) -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    """The parent above in a process group of its own (as a shell runs a command)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(inputs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        process_group=0,
    )
    assert parent.stdout is not None
    workers = [psutil.Process(int(pid)) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2
    return parent, workers


def test_workers_end_when_their_parent_is_killed_outright():
    parent, workers = _parent(20_000)
    try:
        assert all(worker.is_running() for worker in workers)
        parent.kill()  # SIGKILL: no shutdown, no atexit, jobs still running
        parent.wait()
        _, alive = psutil.wait_procs(workers, EXIT_TIMEOUT)
        assert alive == []
    finally:
        parent.kill()
        parent.wait()


def test_ctrl_c_reaches_the_parent_only_and_the_workers_finish_its_jobs():
    parent, workers = _parent(200)
    try:
        os.killpg(parent.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, _ = parent.communicate(timeout=EXIT_TIMEOUT)
        assert out.split() == [b"4"]
        assert parent.returncode == 0
        _, alive = psutil.wait_procs(workers, EXIT_TIMEOUT)
        assert alive == []
    finally:
        parent.kill()
        parent.wait()


# --- choosing -----------------------------------------------------------------------


def test_small_runs_stay_in_this_process_and_raise_the_same_errors():
    pool = start_workers(2, oprf.PARALLEL_THRESHOLD - 1)
    assert isinstance(pool, InlineWorkers)
    try:
        blinded, evaluated, proof, packed = _honest_request()
        job = oprf_worker.finalize_request(PUBLIC, proof, blinded, evaluated[::-1], packed)
        with pytest.raises(voprf.VerifyError):
            pool.submit(oprf_worker.FINALIZE, job).result(EXIT_TIMEOUT)
    finally:
        pool.close()
    assert isinstance(start_workers(1, 10**6), InlineWorkers)
    large = start_workers(2, oprf.PARALLEL_THRESHOLD)
    assert isinstance(large, ProcessWorkers)
    large.close()
