"""OPRF outputs for a set of inputs: from the cache where possible, else from the matcher.

This is where "no OPRF work for known patients" happens: only inputs the
cache lacks for the key are blinded and sent, and each evaluated batch is
committed to the cache as soon as its proof has verified, so an interrupted
run loses at most the batches in flight and a batch the matcher could not
prove is never kept.

A re-check is the same call with nothing missing: the cache hands back the
filter keys it sealed with each token (`CachedTokens.keys`), and the keys'
index comes with them (`KeyIndex.index`), so nothing is hashed or evaluated
again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from breachmatch.client.cache import CachedTokens, TokenCache, output_array
from breachmatch.client.evaluate import OprfPipeline
from breachmatch.client.key_index import KeyIndex
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.filter import TokenKeys


class TokenSource:
    def __init__(self, cache: TokenCache, pipeline: OprfPipeline, progress: bool) -> None:
        self._cache = cache
        self._pipeline = pipeline
        self._progress = progress

    def keys(self, key: TrustedOprfKey, index: KeyIndex) -> tuple[TokenKeys, int]:
        """Filter keys in key order, and how many elements were sent to the matcher."""
        tokens, sent = self.tokens(key, index)
        return tokens.keys, sent

    def tokens(self, key: TrustedOprfKey, index: KeyIndex) -> tuple[CachedTokens, int]:
        """Every key's token (cached, or evaluated and cached now), and elements sent.

        A key whose input is not known (`KnownInputs`) and not cached raises
        `StaleMemoError` before anything is sent.
        """
        inputs = index.inputs
        found = self._cache.lookup(key, inputs, index.index)
        missing = found.missing()
        if not len(missing):
            return found, 0
        position = {inputs[at]: at for at in missing.tolist()}
        with tqdm(
            total=len(missing),
            desc="OPRF",
            unit="key",
            unit_scale=True,
            file=sys.stderr,
            disable=not self._progress,
            leave=False,
        ) as bar:

            def on_batch(batch: Sequence[bytes], outputs: NDArray[np.uint8]) -> None:
                array = output_array(outputs)
                keys = self._cache.put_many(key, batch, array)
                at: NDArray[np.intp] = np.array([position[data] for data in batch], dtype=np.intp)
                found.fill(at, array, keys)
                bar.update(len(batch))

            sent = self._pipeline.run(key, [inputs[at] for at in missing.tolist()], on_batch)
        return found, sent
