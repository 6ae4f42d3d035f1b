"""OPRF outputs for a set of inputs: from the cache where possible, else from the matcher.

This is where "no OPRF work for known patients" happens: only inputs the
cache lacks for the key are blinded and sent, and each evaluated batch is
committed to the cache as soon as its proof has verified, so an interrupted
run loses at most the batches in flight and a batch the matcher could not
prove is never kept.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from breachmatch.client.cache import TokenCache
from breachmatch.client.evaluate import OprfPipeline
from breachmatch.client.key_trust import TrustedOprfKey


class TokenSource:
    def __init__(self, cache: TokenCache, pipeline: OprfPipeline, progress: bool) -> None:
        self._cache = cache
        self._pipeline = pipeline
        self._progress = progress

    def outputs(self, key: TrustedOprfKey, inputs: Sequence[bytes]) -> tuple[list[bytes], int]:
        """Outputs in input order, and how many elements were sent to the matcher for them."""
        found = self._cache.get_many(key, inputs)
        missing = [data for data, output in zip(inputs, found, strict=True) if output is None]
        if not missing:
            return [output for output in found if output is not None], 0
        fresh: dict[bytes, bytes] = {}
        with tqdm(
            total=len(missing),
            desc="OPRF",
            unit="key",
            unit_scale=True,
            file=sys.stderr,
            disable=not self._progress,
            leave=False,
        ) as bar:

            def on_batch(batch: Sequence[bytes], outputs: list[bytes]) -> None:
                self._cache.put_many(key, batch, outputs)
                fresh.update(zip(batch, outputs, strict=True))
                bar.update(len(batch))

            sent = self._pipeline.run(key, missing, on_batch)
        return [
            output if output is not None else fresh[data]
            for data, output in zip(inputs, found, strict=True)
        ], sent
