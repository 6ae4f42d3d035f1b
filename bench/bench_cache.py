"""Token cache and row memo benchmark: a re-check's lookup alone, and the whole re-check.

No matcher and no OPRF (a re-check does none): outputs are random 64-byte
strings, written in batches of 1,024 as a first check checkpoints them.

* **lookup alone** — ``--keys`` synthetic inputs (520,000 ≈ 130,000
  patients × 4 keys) looked up all at once, in another order
  (`TokenCache.lookup`: filter keys included, so nothing is hashed again),
  beside the floor of this layout measured in the same run: one libsodium
  AEAD open per segment and one keyed BLAKE2b per input.
* **whole re-check** — ``--patients`` synthetic patients in the hospital's
  CSV export (`breachmatch_dev.dumps`) and a breach filter holding
  ``--leaked`` of their tokens: the export through the row memo (`memo_read`), the token
  cache lookup, and the filter match (`match_breach`), as `Client.check`
  runs them; on an unchanged export, after one row was edited, and with
  every row normalised (no memo, the cost before it). Reading the export
  alone (the CSV reader, no normalisation) is printed beside them. Every
  variant must give the same matches as a full read of the same file.

CPU seconds of this process, and wall; speed is printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import nacl.bindings
import numpy as np

from breachmatch import logs, oprf
from breachmatch.client.breaches import StoredBreach
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.cache_segments import RECORD, SEGMENT_ENTRIES
from breachmatch.client.check import KeyedTokens, match_breach
from breachmatch.client.key_index import PatientKeys, patient_keys
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.client.memo_read import read_keys
from breachmatch.client.patients import read_patients
from breachmatch.client.results import Match
from breachmatch.client.row_memo import RowMemo
from breachmatch.filter import FilterWriter, Manifest
from breachmatch.readers import open_records
from breachmatch_dev import dumps, synthetic
from breachmatch_dev.cpu_laps import CpuLaps

BATCH = 1024


def floor_seconds(inputs: list[bytes], segments: int) -> float:
    """CPU of the unavoidable work: index hash per input, AEAD open per segment."""
    key, nonce = os.urandom(32), os.urandom(24)
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(SEGMENT_ENTRIES * RECORD.itemsize), b"", nonce, key
    )
    base = hashlib.blake2b(digest_size=16, key=os.urandom(32))
    start = time.process_time()
    for data in inputs:
        hashed = base.copy()
        hashed.update(data)
        hashed.digest()
    for _ in range(segments):
        nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, b"", nonce, key)
    return time.process_time() - start


def lookup_alone(count: int, repeat: int) -> None:
    inputs = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(count)]
    outputs = np.frombuffer(os.urandom(64 * count), dtype=np.uint8).reshape(-1, 64)
    asked = inputs[:]
    random.Random(1).shuffle(asked)
    key = TrustedOprfKey("bench", oprf.random_key_pair()[1])
    root = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        cache_key = CacheKey(os.urandom(32))
        with TokenCache(root / "tokens.sqlite", cache_key) as cache:
            cache.use_key(key)
            start = time.process_time()
            for at in range(0, count, BATCH):
                cache.put_many(key, inputs[at : at + BATCH], outputs[at : at + BATCH])
            write = time.process_time() - start
        lookups = []
        for _ in range(repeat):
            with TokenCache(root / "tokens.sqlite", cache_key) as cache:
                cache.use_key(key)
                start = time.process_time()
                found = cache.lookup(key, asked)
                lookups.append(time.process_time() - start)
            assert found.found.all(), "a cached token is missing"
        size = sum(path.stat().st_size for path in root.iterdir())
        floor = floor_seconds(asked, -(-count // BATCH))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lookup = statistics.median(lookups)
    print(f"\ntoken cache, {count:,} keys in segments of ≤ {BATCH:,} (first-check batches)")
    print(f"  write (checkpoints)     {write:7.2f} CPU s  {count / write:>11,.0f} keys/s")
    print(
        f"  re-check lookup         {lookup:7.2f} CPU s  {count / lookup:>11,.0f} keys/s"
        f"  (median of {repeat})"
    )
    print(
        f"  floor (BLAKE2b + AEAD)  {floor:7.2f} CPU s  {count / floor:>11,.0f} keys/s"
        f"  → lookup = {lookup / floor:.2f}× floor"
    )
    print(f"  file size {size / count:.0f} bytes/key")


@dataclass
class Timed:
    """CPU and wall seconds of one re-check, per phase, and what it found."""

    cpu: dict[str, float]
    wall: float
    matches: list[Match]


class Recheck:
    """A state directory (token cache, row memo) and a breach for one synthetic export."""

    def __init__(self, root: Path, patients: int, leaked: float) -> None:
        self.root = root
        self.export = root / "patients.csv"
        self.people = list(synthetic.people(patients, seed=1))
        with self.export.open("wb") as out:
            dumps.write_hospital_csv(self.people, out)
        self.cache_key = CacheKey(os.urandom(32))
        self.key = TrustedOprfKey("bench", oprf.random_key_pair()[1])
        with self._opened() as (cache, memo):
            start = time.process_time()
            first = read_keys(self.export, memo, cache.index_of)
            self.first_read = time.process_time() - start
            inputs = list(first.keys.inputs)
            outputs = np.frombuffer(os.urandom(64 * len(inputs)), dtype=np.uint8)
            outputs = outputs.reshape(-1, 64)
            for at in range(0, len(inputs), BATCH):
                cache.put_many(self.key, inputs[at : at + BATCH], outputs[at : at + BATCH])
        self.keys = len(inputs)
        chosen = np.random.default_rng(1).choice(
            len(inputs), int(len(inputs) * leaked), replace=False
        )
        self.breach = self._breach(outputs[np.sort(chosen)])

    def _breach(self, outputs: np.ndarray) -> StoredBreach:
        writer = FilterWriter()
        writer.add_batch(outputs, [1] * len(outputs))
        body = self.root / "body"
        with body.open("wb") as sink:
            summary = writer.finish(sink)
        manifest = Manifest.for_body(
            summary, breach_id="bench", version=1, title="bench", organisation="bench",
            breach_date=date.today(), added_date=date.today(), descriptions={},
            verified=False, sensitive=False, oprf_key_id=self.key.key_id,
        )  # fmt: skip
        return StoredBreach(manifest, body)

    @contextlib.contextmanager
    def _opened(self) -> Iterator[tuple[TokenCache, RowMemo]]:
        with (
            TokenCache(self.root / "tokens.sqlite", self.cache_key) as cache,
            RowMemo(self.root / "row-memo.sqlite", self.cache_key, "bench") as memo,
        ):
            cache.use_key(self.key)
            yield cache, memo

    def run(self, read: Callable[[TokenCache, RowMemo], PatientKeys]) -> Timed:
        """One re-check with `read` as its export step, phase by phase."""
        wall = time.perf_counter()
        with self._opened() as (cache, memo):
            laps = CpuLaps()
            patients = read(cache, memo)
            laps.lap("export")
            found = cache.lookup(self.key, patients.keys.inputs, patients.keys.index)
            missing = found.missing()  # an edited row's new key: "evaluated" at random
            if len(missing):
                outputs = np.frombuffer(os.urandom(64 * len(missing)), np.uint8).reshape(-1, 64)
                batch = [patients.keys.inputs[at] for at in missing.tolist()]
                found.fill(missing, outputs, cache.put_many(self.key, batch, outputs))
            laps.lap("cache lookup")
            matches, _ = match_breach(self.breach, KeyedTokens(self.key, found.keys), patients)
            laps.lap("filter match")
        return Timed(laps.seconds, time.perf_counter() - wall, matches)

    def edit_row(self, at: int) -> None:
        """Change one patient's e-mail address in the export (one row changed)."""
        self.people[at] = dataclasses.replace(self.people[at], email=f"edited.{at}@example.org")
        with self.export.open("wb") as out:
            dumps.write_hospital_csv(self.people, out)


def remembered(export: Path) -> Callable[[TokenCache, RowMemo], PatientKeys]:
    return lambda cache, memo: read_keys(export, memo, cache.index_of)


def full_read(export: Path) -> Callable[[TokenCache, RowMemo], PatientKeys]:
    """The re-check's export step before the memo: every row read and normalised."""
    return lambda cache, memo: patient_keys(read_patients(export), cache.index_of)


def reader_alone(export: Path) -> float:
    start = time.process_time()
    with open_records(export) as stream:
        for _ in stream:
            pass
    return time.process_time() - start


def whole_recheck(patients: int, leaked: float, repeat: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-recheck-"))
    try:
        bench = Recheck(root, patients, leaked)
        before = [bench.run(full_read(bench.export)) for _ in range(repeat)]
        unchanged = [bench.run(remembered(bench.export)) for _ in range(repeat)]
        edited = []
        for attempt in range(repeat):
            bench.edit_row(attempt * 997 % patients)
            edited.append(bench.run(remembered(bench.export)))
            truth = bench.run(full_read(bench.export)).matches
            assert edited[-1].matches == truth, "a re-check after an edit differs from a full read"
        assert all(t.matches == before[0].matches for t in unchanged), "memo re-check differs"
        reading = statistics.median(reader_alone(bench.export) for _ in range(repeat))
        floor = floor_seconds([b"x" * 24] * bench.keys, -(-bench.keys // BATCH))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    keys = bench.keys
    print(
        f"\nwhole re-check, {patients:,} patients, {keys:,} distinct keys, "
        f"{len(before[0].matches):,} matched; medians of {repeat}; CPU s (keys per CPU s)"
    )
    phases = list(before[0].cpu)
    header = f"  {'':<34}" + "".join(f"{name:>24}" for name in phases)
    print(header + f"{'total CPU s':>24}{'wall s (keys/s)':>20}")
    print("  (export: read + row memo + distinct keys; cache lookup: token cache by index)")
    for name, runs in (
        ("every row normalised (no memo)", before),
        ("row memo, export unchanged", unchanged),
        ("row memo, one row edited", edited),
    ):
        cells = [statistics.median(run.cpu[phase] for run in runs) for phase in phases]
        total = statistics.median(sum(run.cpu.values()) for run in runs)
        wall = statistics.median(run.wall for run in runs)
        print(
            f"  {name:<34}"
            + "".join(f"{cpu:>9.2f} ({keys / cpu:>10,.0f})" for cpu in cells)
            + f"{total:>9.2f} ({keys / total:>10,.0f}){wall:>7.2f} ({keys / wall:>8,.0f})"
        )
    print(
        f"  first check's read (normalise all, write memo) {bench.first_read:.2f} CPU s; "
        f"CSV reader alone (no normalisation) {reading:.2f} CPU s ({keys / reading:,.0f} keys/s)"
    )
    print(
        f"  floor of the lookup (BLAKE2b per key + AEAD per segment) {floor:.2f} CPU s "
        f"({keys / floor:,.0f} keys/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=520_000, help="lookup alone: keys")
    parser.add_argument("--patients", type=int, default=130_000, help="whole re-check: patients")
    parser.add_argument(
        "--leaked",
        type=float,
        default=0.04,
        help="whole re-check: share of keys in the breach (0.04: ~15%% of patients, as in "
        "demo-alles)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logs.configure_logging("bench-cache", "WARNING")
    load_before = os.getloadavg()
    lookup_alone(args.keys, args.repeat)
    whole_recheck(args.patients, args.leaked, args.repeat)
    print(
        f"\n  load average before {' '.join(f'{x:.1f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
