"""OpenMined PSI on the same element sets, run in the bench venv (.venv-bench).

openmined-psi pins an older protobuf than grpcio needs, so it cannot live in
the project venv; `bench_core.py` runs this file with the bench venv's Python
and reads one JSON object from its stdout. Only the standard library and
openmined-psi are imported here.

Rates are per element, medians over `--repeat` runs. OpenMined's `fpr`
argument is the false-positive rate of a whole intersection of
`num_client_inputs` queries; we pass `per_query_fpr * n` so that both systems
are compared at the same per-query rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import private_set_intersection.python as psi


def _median_rate(n: int, repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-query-fpr", type=float, default=2.0**-40)
    args = parser.parse_args()
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
