"""The libsodium floor: what a run's OPRF work would cost as nothing but libsodium calls.

A benchmark on a shared, loaded machine cannot be judged by its seconds
alone, so the demo and ``bench/bench_check.py`` measure libsodium's own speed
(through rbcl, the library the project calls) in the same run, and print
the work they did beside what that work would cost at that speed:

* ingest — per leaked token: HashToGroup's map and one scalar multiplication;
* first check, client (VOPRF, mode 0x01) — per key: the map, four scalar
  multiplications (blind, unblind, and one per proof composite: libsodium
  has no multi-scalar multiplication) and the composites' two additions;
* first check, matcher — per key: two multiplications (the evaluation and
  its composite share) and one addition;
* the OPRF floor (mode 0x00: the map and two multiplications) is what the
  client would cost without verifying the matcher's proofs, for reference.

The SHA-512 hashing around these (expand_message_xmd, composite weights,
Finalize) is left out, so the floor is a little below what any
implementation could reach. Times are CPU seconds of this process
(`time.process_time`), so other load on the machine slows the floor as it
slows the work it is compared with; a run measures it at its start and its
end (`averaged_with`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import rbcl


@dataclass(frozen=True)
class Floor:
    """CPU seconds per libsodium operation, as measured in this run."""

    #: crypto_core_ristretto255_from_hash (HashToGroup's map to the group).
    h2g: float
    #: crypto_scalarmult_ristretto255.
    mult: float
    #: crypto_core_ristretto255_add.
    add: float

    @classmethod
    def measure(cls, n: int = 2000, repeat: int = 3) -> Floor:
        """Median CPU time per call over `repeat` loops of `n` calls each (~1 s in all)."""
        hashes = [os.urandom(64) for _ in range(n)]
        points = [bytes(rbcl.crypto_core_ristretto255_from_hash(h)) for h in hashes]
        scalars = [bytes(rbcl.crypto_core_ristretto255_scalar_random()) for _ in range(n)]
        mult = rbcl.crypto_scalarmult_ristretto255
        add = rbcl.crypto_core_ristretto255_add
        return cls(
            h2g=_per_call(
                n, repeat, lambda: [rbcl.crypto_core_ristretto255_from_hash(h) for h in hashes]
            ),
            mult=_per_call(
                n, repeat, lambda: [mult(s, p) for s, p in zip(scalars, points, strict=True)]
            ),
            add=_per_call(
                n, repeat, lambda: [add(p, q) for p, q in zip(points, points[::-1], strict=True)]
            ),
        )

    def averaged_with(self, later: Floor) -> Floor:
        """The mean of two measurements: one at the start of a run and one at its end,
        so that the floor has seen the load the run itself saw."""
        return Floor(
            (self.h2g + later.h2g) / 2, (self.mult + later.mult) / 2, (self.add + later.add) / 2
        )

    @property
    def ingest_per_token(self) -> float:
        return self.h2g + self.mult

    @property
    def client_per_key(self) -> float:
        """The hospital's VOPRF work per key: blind, verify (two composites), unblind."""
        return self.h2g + 4 * self.mult + 2 * self.add

    @property
    def client_oprf_per_key(self) -> float:
        """The same without proofs (mode 0x00): the issue's "h2g + 2 scalar mults"."""
        return self.h2g + 2 * self.mult

    @property
    def matcher_per_key(self) -> float:
        return 2 * self.mult + self.add

    def describe(self) -> str:
        return (
            f"libsodium (rbcl) per call, CPU, this run: h2g {self.h2g * 1e6:.1f} µs, "
            f"scalar mult {self.mult * 1e6:.1f} µs, point add {self.add * 1e6:.1f} µs"
        )


def _per_call(n: int, repeat: int, loop: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        loop()
        times.append(time.process_time() - start)
    return statistics.median(times) / n
