"""Core benchmark: this OPRF and filter vs the raw rbcl bound vs OpenMined PSI and `voprf`.

One run, one table. Rows are per-core operations per second (medians over
`--repeat` runs) on the same element sets, in batches of `--batch`:

* hash_to_group      — expand_message_xmd + ristretto255 map, ours vs rbcl's map alone
* blind_evaluate     — the server's per-element work (matcher hot path), RFC 9497
                       mode 0x00 and mode 0x01 (VOPRF: plus the batch proof)
* blind + finalize   — the client's per-element work (hospital SDK), mode 0x00,
                       also as it was before batch inversion, and mode 0x01
                       (plus verifying each batch's proof)
* evaluate (batch)   — ingest's server-side evaluation on 1 and 2 cores
* filter bytes/entry — our Golomb-Rice filter vs OpenMined's GCS at the same
                       per-query false-positive rate
* proof check        — the notifier's check of one proof of match (filter and
                       proof index lookup of one token), and the index's size

The "rbcl bound" does only the libsodium calls a step cannot avoid (for mode
0x01 also the composite's scalar multiplications and additions: libsodium has
no multi-scalar multiplication), so the gap between it and us is the Python
glue. OpenMined PSI (P-256, C++) and the `voprf` package (Rust, RFC 9497) run
in the bench venv (`--psi-python`, `--voprf-python`): OpenMined pins an older
protobuf, and `voprf` is measured only to decide whether to adopt it
(`voprf_pypi.py`: its vectors, its speed, and whether our verifier accepts
its proofs).

Speed is measured here and printed, never asserted in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import rbcl

from breachmatch import oprf, voprf
from breachmatch.filter import (
    BreachFilter,
    FilterWriter,
    Manifest,
    ProofIndex,
    derive_keys,
    filter_stats,
    proven_labels,
)

HERE = Path(__file__).resolve().parent


def median_rate(
    n: int, repeat: int, fn: Callable[[], object], clock: Callable[[], float] = time.process_time
) -> float:
    """Operations per second of `clock`: this process's CPU time unless told otherwise,
    so that other work on a shared machine does not count against a single-core row."""
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return n / statistics.median(times)


def openmined(psi_python: str | None, n: int, repeat: int) -> dict[str, float]:
    if not psi_python:
        return {}
    out = subprocess.run(
        [psi_python, str(HERE / "psi_openmined.py"), "--n", str(n), "--repeat", str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def voprf_pypi(python: str | None, n: int, batch: int, repeat: int) -> dict[str, Any]:
    if not python:
        return {}
    out = subprocess.run(
        [python, str(HERE / "voprf_pypi.py"), "--n", str(n), "--batch", str(batch),
         "--repeat", str(repeat)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    sample = result["sample"]
    result["interop"] = voprf.verify_proof(
        bytes.fromhex(sample["public_key"]),
        [bytes.fromhex(e) for e in sample["blinded"]],
        [bytes.fromhex(e) for e in sample["evaluated"]],
        bytes.fromhex(sample["proof"]),
    )
    return result


def _series(a: float, b: float) -> float:
    """The rate of doing a step at rate `a` and then one at rate `b`."""
    return 1 / (1 / a + 1 / b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="elements per measurement")
    parser.add_argument("--batch", type=int, default=1024, help="elements per proven batch")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--filter-entries", type=int, default=200_000)
    parser.add_argument("--psi-python", help="python of the venv with openmined-psi")
    parser.add_argument("--voprf-python", help="python of the venv with the voprf package")
    args = parser.parse_args()
    n, repeat, size = args.n, args.repeat, args.batch

    inputs = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(n)]
    sk, pk = oprf.random_key_pair()
    uniform = [hashlib.sha512(d).digest() for d in inputs]
    points = [oprf.hash_to_group(d) for d in inputs]
    _, blinded = oprf.blind_batch(inputs)
    evaluated = oprf.blind_evaluate_batch(sk, blinded)
    spans = [(start, start + size) for start in range(0, n, size)]
    proofs = [voprf.blind_evaluate_batch(sk, pk, blinded[a:b])[1] for a, b in spans]
    weights = [bytes(rbcl.crypto_core_ristretto255_scalar_random()) for _ in inputs]

    def raw_client() -> None:
        """Blind and unblind; the inverse of a blind is batched (three scalar products), so
        the bound leaves it out."""
        for u, e in zip(uniform, evaluated, strict=True):
            r = rbcl.crypto_core_ristretto255_scalar_random()
            rbcl.crypto_scalarmult_ristretto255(r, rbcl.crypto_core_ristretto255_from_hash(u))
            rbcl.crypto_scalarmult_ristretto255(r, e)

    def raw_composite(elements: list[bytes]) -> None:
        """Σ wᵢ·Eᵢ: one multiplication and one addition per element, as libsodium allows."""
        total = bytes(32)
        for w, e in zip(weights, elements, strict=True):
            total = rbcl.crypto_core_ristretto255_add(
                total, rbcl.crypto_scalarmult_ristretto255(w, e)
            )

    def raw_voprf_server() -> None:
        for p in points:
            rbcl.crypto_scalarmult_ristretto255(sk, p)
        raw_composite(points)

    def raw_voprf_client() -> None:
        raw_client()
        raw_composite(blinded)
        raw_composite(evaluated)

    def ours_client() -> None:
        bs, _ = oprf.blind_batch(inputs)
        oprf.finalize_batch(inputs, bs, evaluated)

    def ours_client_before() -> None:
        """Mode 0x00 as it was before batch inversion: one scalar inversion per element."""
        bs, _ = oprf.blind_batch(inputs)
        [oprf.finalize(d, r, e) for d, r, e in zip(inputs, bs, evaluated, strict=True)]

    def ours_voprf_server() -> None:
        for a, b in spans:
            voprf.blind_evaluate_batch(sk, pk, blinded[a:b])

    def ours_voprf_client() -> None:
        oprf.blind_batch(inputs)  # the blinding work; the proofs are over `blinded`
        for (a, b), proof in zip(spans, proofs, strict=True):
            voprf.finalize_batch(pk, inputs[a:b], blinded[a:b], blinded[a:b], evaluated[a:b], proof)

    rows: list[tuple[str, float, float, float | None, float | None]] = []
    psi = openmined(args.psi_python, n, max(1, repeat // 2))
    rust = voprf_pypi(args.voprf_python, n, size, repeat)

    rows.append(
        (
            "hash_to_group",
            median_rate(n, repeat, lambda: [oprf.hash_to_group(d) for d in inputs]),
            median_rate(
                n, repeat, lambda: [rbcl.crypto_core_ristretto255_from_hash(u) for u in uniform]
            ),
            None,
            None,
        )
    )
    server_0 = median_rate(n, repeat, lambda: oprf.blind_evaluate_batch(sk, blinded))
    server_1 = median_rate(n, repeat, ours_voprf_server)
    rows.append(
        (
            "blind_evaluate (server, 0x00)",
            server_0,
            median_rate(
                n, repeat, lambda: [rbcl.crypto_scalarmult_ristretto255(sk, p) for p in points]
            ),
            psi.get("server_process_per_s"),
            None,
        )
    )
    rows.append(
        (
            "  + batch proof (0x01)",
            server_1,
            median_rate(n, repeat, raw_voprf_server),
            None,
            rust.get("server_per_s"),
        )
    )
    client_psi = None
    if psi:
        client_psi = _series(psi["client_request_per_s"], psi["client_intersect_per_s"])
    client_before = median_rate(n, repeat, ours_client_before)
    client_0 = median_rate(n, repeat, ours_client)
    client_1 = median_rate(n, repeat, ours_voprf_client)
    rows.append(
        (
            "blind+finalize (client, 0x00)",
            client_0,
            median_rate(n, repeat, raw_client),
            client_psi,
            None,
        )
    )
    rows.append(("  as before batch inversion", client_before, 0.0, None, None))
    rows.append(
        (
            "  + verify (0x01)",
            client_1,
            median_rate(n, repeat, raw_voprf_client),
            None,
            _series(rust["client_blind_per_s"], rust["client_finalize_per_s"]) if rust else None,
        )
    )
    rows.append(
        (
            "evaluate (server, 1 core)",
            median_rate(n, repeat, lambda: oprf.evaluate_batch(sk, inputs)),
            median_rate(
                n,
                repeat,
                lambda: [
                    rbcl.crypto_scalarmult_ristretto255(
                        sk, rbcl.crypto_core_ristretto255_from_hash(u)
                    )
                    for u in uniform
                ],
            ),
            psi.get("setup_per_s"),
            None,
        )
    )
    cores = os.cpu_count() or 1
    big = inputs * 4
    with ProcessPoolExecutor(max_workers=cores) as pool:
        oprf.evaluate_batch_parallel(sk, big, pool, workers=cores)  # warm the workers
        rows.append(
            (
                f"evaluate (batch, {cores} cores)",
                median_rate(
                    len(big),
                    repeat,
                    lambda: oprf.evaluate_batch_parallel(sk, big, pool, workers=cores),
                    clock=time.perf_counter,  # the work is in the pool's processes
                ),
                0.0,
                None,
                None,
            )
        )

    outputs = [os.urandom(oprf.OUTPUT_SIZE) for _ in range(args.filter_entries)]
    writer = FilterWriter()
    writer.add_batch(outputs, [1] * len(outputs))
    body, proof_index = io.BytesIO(), io.BytesIO()
    summary = writer.finish(body, proof_index)
    stats = filter_stats(summary)
    manifest = Manifest.for_body(
        summary,
        breach_id="bench",
        version=1,
        title="bench",
        organisation="bench",
        breach_date=date.today(),
        added_date=date.today(),
        descriptions={},
        verified=False,
        sensitive=False,
        oprf_key_id="bench",
    )
    breach_filter = BreachFilter.from_bytes(body.getvalue(), manifest)
    found = breach_filter.lookup(outputs[:1000])
    assert all(label is not None for label in found), "filter lost entries"
    index = ProofIndex.from_bytes(proof_index.getvalue(), summary.entry_count)
    proven = outputs[:1000]
    rows.append(
        (
            "proof check (notifier)",
            median_rate(
                len(proven),
                repeat,
                lambda: [proven_labels(breach_filter, index, derive_keys([o])) for o in proven],
            ),
            0.0,
            None,
            None,
        )
    )

    print(
        f"\nbreachmatch core benchmark — n={n}, batch={size}, repeat={repeat}, medians, "
        "ops/s per core\n"
    )
    header = (
        f"{'operation':<32}{'breachmatch':>14}{'rbcl bound':>14}{'OpenMined PSI':>16}"
        f"{'voprf (PyPI)':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, ours, bound, other, rust_rate in rows:
        bound_text = f"{bound:>14,.0f}" if bound else f"{'—':>14}"
        other_text = f"{other:>16,.0f}" if other else f"{'—':>16}"
        rust_text = f"{rust_rate:>14,.0f}" if rust_rate else f"{'—':>14}"
        print(f"{name:<32}{ours:>14,.0f}{bound_text}{other_text}{rust_text}")
    print()
    print(
        f"  VOPRF (0x01) CPU per element vs OPRF (0x00): matcher {server_0 / server_1:.2f}x, "
        f"client {client_0 / client_1:.2f}x "
        f"({client_before / client_1:.2f}x of the client as it was before batch inversion)"
    )
    if rust:
        checked = ", ".join(
            f"{k} {'pass' if v else 'not checkable'}" for k, v in rust["vectors"].items()
        )
        print(f"  voprf (PyPI) RFC 9497 A.1.2 vectors: {checked}")
        print(f"  voprf (PyPI) batch proof accepted by breachmatch.voprf: {rust['interop']}")
    print()
    gcs = psi.get("gcs_bytes_per_entry")
    gcs_text = f"{gcs:>16.2f}" if gcs else f"{'—':>16}"
    print(f"{'filter bytes/entry (tags)':<32}{stats.tag_bytes_per_entry:>14.2f}{'—':>14}{gcs_text}")
    print(f"{'filter bytes/entry (+label)':<32}{stats.bytes_per_entry:>14.2f}{'—':>14}{'—':>16}")
    index_bytes = len(proof_index.getvalue()) / summary.entry_count
    print(f"{'proof index bytes/entry':<32}{index_bytes:>14.2f}{'—':>14}{'—':>16}")
    print(
        f"  ours: {args.filter_entries:,} entries, per-query false match "
        f"2^{stats.false_match_log2:.1f}; OpenMined GCS: {n:,} entries at the same per-query rate"
    )
    print(f"  python {sys.version.split()[0]}, {cores} cores")


if __name__ == "__main__":
    main()
