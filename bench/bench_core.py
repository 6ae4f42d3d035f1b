"""Core benchmark: this OPRF and filter vs the raw rbcl bound vs OpenMined PSI.

One run, one table. Rows are per-core operations per second (medians over
`--repeat` runs) on the same element sets:

* hash_to_group      — expand_message_xmd + ristretto255 map, ours vs rbcl's map alone
* blind_evaluate     — the server's per-element work (matcher hot path)
* blind + finalize   — the client's per-element work (hospital SDK)
* evaluate (batch)   — ingest's server-side evaluation on 1 and 2 cores
* filter bytes/entry — our Golomb-Rice filter vs OpenMined's GCS at the same
                       per-query false-positive rate

The "rbcl bound" does only the libsodium calls a step cannot avoid, so the gap
between it and us is the Python glue. OpenMined PSI (P-256, C++) runs in its
own venv (`--psi-python`) because it pins an older protobuf.

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

import rbcl

from breachmatch import oprf
from breachmatch.filter import BreachFilter, FilterWriter, Manifest, filter_stats

HERE = Path(__file__).resolve().parent


def median_rate(n: int, repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="elements per measurement")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--filter-entries", type=int, default=200_000)
    parser.add_argument("--psi-python", help="python of the venv with openmined-psi")
    args = parser.parse_args()
    n, repeat = args.n, args.repeat

    inputs = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(n)]
    sk, _ = oprf.random_key_pair()
    uniform = [hashlib.sha512(d).digest() for d in inputs]
    points = [oprf.hash_to_group(d) for d in inputs]
    _, blinded = oprf.blind_batch(inputs)
    evaluated = oprf.blind_evaluate_batch(sk, blinded)

    def raw_client() -> None:
        for u, e in zip(uniform, evaluated, strict=True):
            r = rbcl.crypto_core_ristretto255_scalar_random()
            rbcl.crypto_scalarmult_ristretto255(r, rbcl.crypto_core_ristretto255_from_hash(u))
            rbcl.crypto_scalarmult_ristretto255(rbcl.crypto_core_ristretto255_scalar_invert(r), e)

    def ours_client() -> None:
        bs, _ = oprf.blind_batch(inputs)
        oprf.finalize_batch(inputs, bs, evaluated)

    rows: list[tuple[str, float, float, float | None]] = []
    psi = openmined(args.psi_python, n, max(1, repeat // 2))

    rows.append(
        (
            "hash_to_group",
            median_rate(n, repeat, lambda: [oprf.hash_to_group(d) for d in inputs]),
            median_rate(
                n, repeat, lambda: [rbcl.crypto_core_ristretto255_from_hash(u) for u in uniform]
            ),
            None,
        )
    )
    rows.append(
        (
            "blind_evaluate (server)",
            median_rate(n, repeat, lambda: oprf.blind_evaluate_batch(sk, blinded)),
            median_rate(
                n, repeat, lambda: [rbcl.crypto_scalarmult_ristretto255(sk, p) for p in points]
            ),
            psi.get("server_process_per_s"),
        )
    )
    client_psi = None
    if psi:
        client_psi = 1 / (1 / psi["client_request_per_s"] + 1 / psi["client_intersect_per_s"])
    rows.append(
        (
            "blind+finalize (client)",
            median_rate(n, repeat, ours_client),
            median_rate(n, repeat, raw_client),
            client_psi,
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
                ),
                0.0,
                None,
            )
        )

    outputs = [os.urandom(oprf.OUTPUT_SIZE) for _ in range(args.filter_entries)]
    writer = FilterWriter()
    writer.add_batch(outputs, [1] * len(outputs))
    body = io.BytesIO()
    summary = writer.finish(body)
    stats = filter_stats(summary)
    manifest = Manifest.for_body(
        summary,
        breach_id="bench",
        title="bench",
        organisation="bench",
        breach_date=date.today(),
        added_date=date.today(),
        description="",
        verified=False,
        sensitive=False,
        oprf_key_id="bench",
    )
    found = BreachFilter.from_bytes(body.getvalue(), manifest).lookup(outputs[:1000])
    assert all(label is not None for label in found), "filter lost entries"

    print(f"\nbreachmatch core benchmark — n={n}, repeat={repeat}, medians, ops/s per core\n")
    header = f"{'operation':<28}{'breachmatch':>14}{'rbcl bound':>14}{'OpenMined PSI':>16}"
    print(header)
    print("-" * len(header))
    for name, ours, bound, other in rows:
        bound_text = f"{bound:>14,.0f}" if bound else f"{'—':>14}"
        other_text = f"{other:>16,.0f}" if other else f"{'—':>16}"
        print(f"{name:<28}{ours:>14,.0f}{bound_text}{other_text}")
    print()
    gcs = psi.get("gcs_bytes_per_entry")
    gcs_text = f"{gcs:>16.2f}" if gcs else f"{'—':>16}"
    print(f"{'filter bytes/entry (tags)':<28}{stats.tag_bytes_per_entry:>14.2f}{'—':>14}{gcs_text}")
    print(f"{'filter bytes/entry (+label)':<28}{stats.bytes_per_entry:>14.2f}{'—':>14}{'—':>16}")
    print(
        f"  ours: {args.filter_entries:,} entries, per-query false match "
        f"2^{stats.false_match_log2:.1f}; OpenMined GCS: {n:,} entries at the same per-query rate"
    )
    print(f"  python {sys.version.split()[0]}, {cores} cores")


if __name__ == "__main__":
    main()
