"""VLLM deployment: fine-grained visual perceiver + the LLM with LoRA -> E_Q, E_P and the next frame's latents.

The LoRA adapter is chosen per stream with Serve model multiplexing: callers send
`handle.options(multiplexed_model_id=adapter)`, Serve routes to a replica that has the adapter loaded and splits
batches by adapter, and each replica keeps at most MAX_ADAPTERS_PER_REPLICA adapters (LRU). "default" is the
checkpoint's own adapter; any other name loads from `<adapters_dir>/<name>/` (peft's safetensors layout).
"""

from __future__ import annotations

from ray import serve

from models.hyperseg import EncodedFrame, HyperSeg
from models.lora_adapters import DEFAULT_ADAPTER, ensure_adapter, unload_adapter, use_adapter
from models.video_predictor import VLLMCall, VLLMResult
from pipeline.serve.encode import stack_encoded
from pipeline.serve.replica import ModelReplica, load_predictor, size_batches, timed
from pipeline.serve.settings import AppArgs

MAX_ADAPTERS_PER_REPLICA = 4  # fixed by the decorator; a LoRA of the 3B model is ~20 MB


class LoadedAdapter:
    """What the multiplexed loader hands Serve: unloading it (LRU eviction) frees the adapter's weights."""

    def __init__(self, model: HyperSeg, name: str) -> None:
        self.model, self.name = model, name

    def __del__(self) -> None:
        if self.name != DEFAULT_ADAPTER:
            unload_adapter(self.model, self.name)  # a no-op when the replica is already tearing the model down


@serve.deployment(name="VLLM")
class VLLM(ModelReplica):
    def __init__(self, args: AppArgs) -> None:
        self.predictor, _ = load_predictor(args, args.vllm, "vllm")
        self.adapters_dir = args.adapters_dir
        size_batches(self.vllm_batch, args.vllm)

    @serve.multiplexed(max_num_models_per_replica=MAX_ADAPTERS_PER_REPLICA)
    async def get_adapter(self, name: str) -> LoadedAdapter:
        ensure_adapter(self.predictor.model, name, self.adapters_dir)
        return LoadedAdapter(self.predictor.model, name)

    async def __call__(self, encoded: EncodedFrame, call: VLLMCall) -> VLLMResult:
        return await self.vllm_batch(encoded, call)

    @serve.batch
    async def vllm_batch(self, encoded: list[EncodedFrame], calls: list[VLLMCall]) -> list[VLLMResult]:
        adapter = await self.get_adapter(serve.get_multiplexed_model_id() or DEFAULT_ADAPTER)
        with timed("vllm", len(calls)):
            use_adapter(self.predictor.model, adapter.name)
            batch = stack_encoded(encoded, self.predictor.model.device)
            return self.predictor.vllm_batch(batch.image_tokens, batch.pyramid, calls)
