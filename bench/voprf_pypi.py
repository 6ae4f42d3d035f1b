"""The `voprf` package (PyPI; Rust, RFC 9497) on the same inputs, run in the bench venv.

Issue 13 asked whether to adopt it for the composite/proof instead of our own
over rbcl: only if it passes the RFC 9497 vectors and is measured faster.
`bench_core.py` runs this file with the bench venv's Python (the package is
not a project dependency) and reads one JSON object from its stdout:

* rates per element, medians over ``--repeat`` runs, for its server
  (``Evaluator.evaluate_batch``: evaluate + batch proof) and its client
  (``Client.blind``, and ``Client.finalize_batch``: verify + unblind), in
  batches of ``--batch`` elements;
* what of the A.1.2 vectors it can be checked against: DeriveKeyPair, the
  Evaluate outputs and BlindEvaluate of the vectors' blinded elements. Its API
  takes no blind and no proof nonce, so the Blind and Proof vectors cannot be
  reproduced with it at all;
* one batch it proved (public key, blinded elements, batch output), so that
  `bench_core.py` can check its proof with our verifier (interoperability).

Only the standard library and voprf are imported here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from voprf import ristretto

SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
PK_SM = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
VECTORS = [  # (input, blinded element, evaluated element, output) of A.1.2.1 and A.1.2.2
    (
        "00",
        "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
        "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
        "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
        "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c",
    ),
    (
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
        "60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
        "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
        "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6",
    ),
]
PROOF_SIZE = 64


def median_rate(n: int, repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()  # CPU time, as bench_core.py measures its own rows
        fn()
        times.append(time.process_time() - start)
    return n / statistics.median(times)


def vectors() -> dict[str, bool]:
    server = ristretto.Evaluator.from_seed(SEED, KEY_INFO)
    evaluated = [
        server.evaluate(ristretto.BlindedInput.deserialize(bytes.fromhex(blinded))).serialize()
        for _, blinded, _, _ in VECTORS
    ]
    return {
        "derive_key_pair": server.public_key.serialize().hex() == PK_SM,
        "evaluate_outputs": all(
            server.evaluate_known_input(bytes.fromhex(inp)).hex() == out
            for inp, _, _, out in VECTORS
        ),
        # A single VerifiableOutput is proof || element; the proof is randomised.
        "blind_evaluate_elements": all(
            out[PROOF_SIZE:].hex() == element
            for out, (_, _, element, _) in zip(evaluated, VECTORS, strict=True)
        ),
        "blind_and_proof": False,  # no API to fix the blind or the proof nonce
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    inputs = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(args.n)]
    batches = [inputs[i : i + args.batch] for i in range(0, len(inputs), args.batch)]
    server = ristretto.Evaluator.from_seed(bytes(range(32)), b"bench")
    blinded = [[ristretto.Client.blind(data) for data in batch] for batch in batches]
    outputs = [server.evaluate_batch([b for _, b in batch]) for batch in blinded]

    def finalize() -> None:
        for batch, output in zip(blinded, outputs, strict=True):
            ristretto.Client.finalize_batch([c for c, _ in batch], output, server.public_key)

    sample = blinded[0][:16]
    sample_output = server.evaluate_batch([b for _, b in sample]).serialize()
    result = {
        "server_per_s": median_rate(
            args.n,
            args.repeat,
            lambda: [server.evaluate_batch([b for _, b in batch]) for batch in blinded],
        ),
        "client_blind_per_s": median_rate(
            args.n, args.repeat, lambda: [ristretto.Client.blind(data) for data in inputs]
        ),
        "client_finalize_per_s": median_rate(args.n, args.repeat, finalize),
        "vectors": vectors(),
        "sample": {
            "public_key": server.public_key.serialize().hex(),
            "blinded": [b.serialize().hex() for _, b in sample],
            "proof": sample_output[:PROOF_SIZE].hex(),
            "evaluated": [
                sample_output[PROOF_SIZE + 32 * i : PROOF_SIZE + 32 * (i + 1)].hex()
                for i in range(len(sample))
            ],
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
