"""Decode deployment: still-image payloads (JPEG) -> RGB frames, batched across streams.

Pass-through H.264 / HEVC packets are decoded per stream inside the stream's actor (operators/packet_decoder.py):
inter-coded packets need the stream's own decoder state, which a shared stateless deployment cannot hold.
"""

from __future__ import annotations

import numpy as np
from ray import serve

from operators.local_stages import decode_payload
from pipeline.serve.replica import item_results, raise_item_error, size_batches, timed
from pipeline.serve.settings import StageSettings


@serve.deployment(name="Decode")
class Decode:
    def __init__(self, stage: StageSettings) -> None:
        size_batches(self.decode_batch, stage)

    async def __call__(self, payload: bytes, codec: str) -> np.ndarray:
        return raise_item_error(await self.decode_batch(payload, codec))

    @serve.batch
    async def decode_batch(self, payloads: list[bytes], codecs: list[str]) -> list[np.ndarray | Exception]:
        with timed("decode", len(payloads)):
            return item_results(decode_payload, payloads, codecs)
