"""Matcher benchmark: Evaluate throughput over gRPC beside the raw rbcl bound, same run.

Starts its own nats-server, dev PKI and operator keys in a temporary
directory, then for each ``--workers`` value a real ``breachmatch-matcher
serve`` process, and streams pre-blinded batches at it over mTLS from this
process. Rows are elements per second (medians over ``--repeat`` runs):

* rbcl scalarmult        — libsodium's ristretto255 scalar multiplication alone,
                           in 1 and in 2 processes: what no server can beat
* blind_evaluate (local) — `oprf.blind_evaluate_batch` in this process: the
                           same plus validation, without gRPC
* gRPC Evaluate          — the matcher end to end (validation, budget CAS in
                           NATS KV, evaluation, protobuf, TLS), one stream,
                           and two concurrent streams

The client shares the machine: its protobuf and TLS work competes with the
matcher's workers, so on a 2-core box the 2-worker rows understate a server
with its own cores. Speed is printed, never asserted.

    .venv/bin/python bench/bench_matcher.py [--workers 1 2] [--batches 24] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import rbcl
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breachmatch import keys, oprf, tls
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_dev import DevPki, NatsServer, make_dev_pki
from breachmatch_dev.nats_server import free_port

TENANT = "bench-hospital"
START_TIMEOUT = 60.0


def _scalarmult_loop(sk: bytes, elements: Sequence[bytes]) -> int:
    for element in elements:
        rbcl.crypto_scalarmult_ristretto255(sk, element)
    return len(elements)


class Rows:
    """Timings per row; every repetition runs every row once, so load drifts hit all alike."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, count: int, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)
        self.counts[name] = count

    def rates(self) -> list[tuple[str, float]]:
        return [(n, self.counts[n] / statistics.median(t)) for n, t in self.times.items()]


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure_local(rows: Rows, sk: bytes, elements: list[bytes], pool: ProcessPoolExecutor) -> None:
    """The bounds: bare scalar multiplications on 1 and 2 cores, and local blind_evaluate."""
    n, half = len(elements), len(elements) // 2
    rows.add("rbcl scalarmult, 1 core", n, _timed(lambda: _scalarmult_loop(sk, elements)))
    rows.add(
        "rbcl scalarmult, 2 cores",
        2 * half,
        _timed(
            lambda: list(pool.map(_scalarmult_loop, [sk, sk], [elements[:half], elements[half:]]))
        ),
    )
    rows.add(
        "blind_evaluate (local), 1 core",
        n,
        _timed(lambda: oprf.blind_evaluate_batch(sk, elements)),
    )


@contextmanager
def matcher_process(
    root: Path, pki: DevPki, operator: keys.OperatorKeyFiles, nats_url: str, workers: int
) -> Iterator[int]:
    """A `breachmatch-matcher serve` subprocess; yields its gRPC port once it is SERVING."""
    grpc_port, health_port = free_port(), free_port()
    tenants = root / "tenants.json"
    tenants.write_text(json.dumps({"default_daily_budget": 10**15}))
    argv = [
        sys.executable, "-m", "breachmatch_matcher.cli", "serve", "--log-level", "WARNING",
        "--nats-url", nats_url, "--tls-dir", str(pki.service_dir("matcher")),
        "--oprf-key-dir", str(operator.oprf_dir), "--verify-key", str(operator.verify_key),
        "--notifier-statement", str(operator.notifier_statement),
        "--tenants-file", str(tenants), "--workers", str(workers),
        "--grpc-addr", f"127.0.0.1:{grpc_port}", "--health-addr", f"127.0.0.1:{health_port}",
        "--metrics-addr", "off",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        asyncio.run(_wait_serving(health_port))
        yield grpc_port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _wait_serving(health_port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=START_TIMEOUT, wait_for_ready=True
        )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError("matcher started but does not report SERVING")


async def _stream(stub: Any, key_id: str, batch: list[bytes], batches: int) -> int:
    requests = (
        matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=batch, batch_id=i)
        for i in range(batches)
    )
    evaluated = 0
    async for response in stub.Evaluate(requests, timeout=600):
        evaluated += len(response.evaluated_elements)
    return evaluated


async def measure_grpc(
    rows: Rows, label: str, stub: Any, key_id: str, batch: list[bytes], batches: int
) -> None:
    """Elements/s through Evaluate with 1 and 2 concurrent streams."""
    for streams in (1, 2):
        started = time.perf_counter()
        done = await asyncio.gather(
            *(_stream(stub, key_id, batch, batches) for _ in range(streams))
        )
        elapsed = time.perf_counter() - started
        assert sum(done) == streams * batches * len(batch)
        plural = "stream" if streams == 1 else "streams"
        rows.add(f"gRPC Evaluate, {label}, {streams} {plural}", sum(done), elapsed)


async def run(args: argparse.Namespace, ports: dict[int, int], pki: DevPki) -> Rows:
    _, batch = oprf.blind_batch([f"bench:{i}".encode() for i in range(args.batch_size)])
    sk, _ = oprf.random_key_pair()
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(pki.tenant_dir(TENANT)))
    rows = Rows()
    async with AsyncExitStack() as stack:
        stubs: dict[int, Any] = {}
        for workers, port in ports.items():
            channel = grpc.aio.secure_channel(f"localhost:{port}", credentials)
            await stack.enter_async_context(channel)
            stubs[workers] = matcher_pb2_grpc.MatcherStub(channel)
        info = await stubs[args.workers[0]].GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=30)
        key_id = info.current_key_id
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_scalarmult_loop, [sk, sk], [batch[:8], batch[:8]]))  # start both
            for stub in stubs.values():  # warm up connections and worker pools
                await _stream(stub, key_id, batch, 1)
            for _ in range(args.repeat):
                measure_local(rows, sk, batch * args.batches, pool)
                for workers, stub in stubs.items():
                    label = f"--workers {workers}"
                    await measure_grpc(rows, label, stub, key_id, batch, args.batches)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=6, help="batches per stream per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(
        f"{os.cpu_count()} cores; batches of {args.batch_size}, {args.batches} per stream, "
        f"median of {args.repeat}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-matcher-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        pki = make_dev_pki(root / "pki", tenants=[TENANT])
        operator = keys.make_operator_keys(root / "keys")
        nats = stack.enter_context(NatsServer(root / "nats", pki))
        asyncio.run(nats.provision("ingest"))  # the matcher waits for ingest's streams
        ports = {
            workers: stack.enter_context(matcher_process(root, pki, operator, nats.url, workers))
            for workers in args.workers
        }
        rows = asyncio.run(run(args, ports, pki)).rates()

    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}}  {'elements/s':>12}")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>12,.0f}")


if __name__ == "__main__":
    main()
