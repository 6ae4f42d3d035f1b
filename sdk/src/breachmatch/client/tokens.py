"""OPRF outputs for a set of inputs: from the cache where possible, else from the matcher.

This is where "no OPRF work for known patients" happens: only inputs the
cache lacks for the key id are blinded and sent, and each evaluated batch is
committed to the cache as it completes, so an interrupted run loses at most
the batches in flight.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from breachmatch.client.cache import TokenCache
from breachmatch.client.evaluate import OprfPipeline


class TokenSource:
    def __init__(self, cache: TokenCache, pipeline: OprfPipeline, progress: bool) -> None:
        self._cache = cache
        self._pipeline = pipeline
        self._progress = progress

    def outputs(self, key_id: str, inputs: Sequence[bytes]) -> tuple[list[bytes], int]:
        """Outputs in input order, and how many elements were sent to the matcher for them."""
        found = self._cache.get_many(key_id, inputs)
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
                self._cache.put_many(key_id, batch, outputs)
                fresh.update(zip(batch, outputs, strict=True))
                bar.update(len(batch))

            sent = self._pipeline.run(key_id, missing, on_batch)
        return [
            output if output is not None else fresh[data]
            for data, output in zip(inputs, found, strict=True)
        ], sent
