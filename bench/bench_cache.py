"""Token cache benchmark: a re-check's lookup of every cached token, beside its floor.

No matcher and no OPRF: ``--keys`` synthetic inputs (520,000 ≈ 130,000
patients × 4 keys) get random 64-byte outputs, written in batches of 1,024
as a first check checkpoints them, then looked up all at once, in another
order, as a re-check does (`TokenCache.lookup`: filter keys included, so
nothing is hashed again). Beside it, in the same run, the floor of this
layout: one libsodium AEAD open per segment and one keyed BLAKE2b per input.
CPU seconds of this process; speed is printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import nacl.bindings
import numpy as np

from breachmatch import oprf
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.cache_segments import RECORD, SEGMENT_ENTRIES
from breachmatch.client.key_trust import TrustedOprfKey

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=520_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    inputs = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(args.keys)]
    outputs = np.frombuffer(os.urandom(64 * args.keys), dtype=np.uint8).reshape(-1, 64)
    asked = inputs[:]
    random.Random(1).shuffle(asked)
    key = TrustedOprfKey("bench", oprf.random_key_pair()[1])
    root = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    load_before = os.getloadavg()
    try:
        cache_key = CacheKey(os.urandom(32))
        with TokenCache(root / "tokens.sqlite", cache_key) as cache:
            cache.use_key(key)
            start = time.process_time()
            for at in range(0, args.keys, BATCH):
                cache.put_many(key, inputs[at : at + BATCH], outputs[at : at + BATCH])
            write = time.process_time() - start
        lookups = []
        for _ in range(args.repeat):
            with TokenCache(root / "tokens.sqlite", cache_key) as cache:
                cache.use_key(key)
                start = time.process_time()
                found = cache.lookup(key, asked)
                lookups.append(time.process_time() - start)
            assert found.found.all(), "a cached token is missing"
        size = sum(path.stat().st_size for path in root.iterdir())
        floor = floor_seconds(asked, -(-args.keys // BATCH))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lookup = sorted(lookups)[len(lookups) // 2]
    print(f"\ntoken cache, {args.keys:,} keys in segments of ≤ {BATCH:,} (first-check batches)")
    print(f"  write (checkpoints)     {write:7.2f} CPU s  {args.keys / write:>11,.0f} keys/s")
    print(
        f"  re-check lookup         {lookup:7.2f} CPU s  {args.keys / lookup:>11,.0f} keys/s"
        f"  (median of {args.repeat})"
    )
    print(
        f"  floor (BLAKE2b + AEAD)  {floor:7.2f} CPU s  {args.keys / floor:>11,.0f} keys/s"
        f"  → lookup = {lookup / floor:.2f}× floor"
    )
    print(f"  file size {size / args.keys:.0f} bytes/key")
    print(
        f"  load average before {' '.join(f'{x:.1f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
