"""OpenMined PSI on the same element sets, run in the bench venv (.venv-bench).

openmined-psi pins an older protobuf than grpcio needs, so it cannot live in
the project venv; `bench_core.py` runs this file with the bench venv's Python
and reads one JSON object from its stdout. Only the standard library and
openmined-psi are imported here.

Rates are per element, medians over `--repeat` runs. OpenMined's `fpr`
argument is the false-positive rate of a whole intersection of
`num_client_inputs` queries; we pass `per_query_fpr * n` so that both systems
are compared at the same per-query rate.

With ``--client-items FILE --server-items FILE`` (one item per line: the very
sets another benchmark used, e.g. `bench_check.py`'s hospital and leak) it
runs the protocol on those sets instead and prints median *seconds* per
phase, the intersection size and the setup message size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import private_set_intersection.python as psi


def _median_seconds(repeat: int, fn: Callable[[], object]) -> float:
    """CPU seconds of this process (OpenMined runs on one thread), as bench_core measures
    its own rows, so that other load on a shared machine does not count."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _median_rate(n: int, repeat: int, fn: Callable[[], object]) -> float:
    return n / _median_seconds(repeat, fn)


def on_sets(client_file: str, server_file: str, repeat: int, per_query_fpr: float) -> None:
    """The protocol on given sets: seconds per phase (medians), as one JSON object."""
    client_items = Path(client_file).read_text(encoding="utf-8").splitlines()
    server_items = Path(server_file).read_text(encoding="utf-8").splitlines()
    server = psi.server.CreateWithNewKey(True)
    client = psi.client.CreateWithNewKey(True)
    fpr = per_query_fpr * len(client_items)
    ds = psi.DataStructure.GCS

    setup = server.CreateSetupMessage(fpr, len(client_items), server_items, ds)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    found = client.GetIntersection(setup, response)
    result = {
        "n_client": len(client_items),
        "n_server": len(server_items),
        "intersection": len(found),
        "setup_s": _median_seconds(
            repeat, lambda: server.CreateSetupMessage(fpr, len(client_items), server_items, ds)
        ),
        "client_request_s": _median_seconds(repeat, lambda: client.CreateRequest(client_items)),
        "server_process_s": _median_seconds(repeat, lambda: server.ProcessRequest(request)),
        "client_intersect_s": _median_seconds(
            repeat, lambda: client.GetIntersection(setup, response)
        ),
        "setup_bytes": len(setup.SerializeToString()),
        "request_bytes": len(request.SerializeToString()),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-query-fpr", type=float, default=2.0**-40)
    parser.add_argument("--client-items", help="file of client items, one per line")
    parser.add_argument("--server-items", help="file of server items, one per line")
    args = parser.parse_args()
    if args.client_items and args.server_items:
        on_sets(args.client_items, args.server_items, args.repeat, args.per_query_fpr)
        return
    n = args.n
    items = [f"cpr:{i:010d}" for i in range(n)]
    server = psi.server.CreateWithNewKey(True)
    client = psi.client.CreateWithNewKey(True)
    fpr = args.per_query_fpr * n

    setup = server.CreateSetupMessage(fpr, n, items, psi.DataStructure.GCS)
    request = client.CreateRequest(items)
    response = server.ProcessRequest(request)
    found = client.GetIntersection(setup, response)
    assert len(found) == n, "OpenMined PSI lost elements"

    result = {
        "setup_per_s": _median_rate(
            n, args.repeat, lambda: server.CreateSetupMessage(fpr, n, items, psi.DataStructure.GCS)
        ),
        "client_request_per_s": _median_rate(n, args.repeat, lambda: client.CreateRequest(items)),
        "server_process_per_s": _median_rate(
            n, args.repeat, lambda: server.ProcessRequest(request)
        ),
        "client_intersect_per_s": _median_rate(
            n, args.repeat, lambda: client.GetIntersection(setup, response)
        ),
        "gcs_bytes_per_entry": len(setup.SerializeToString()) / n,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
