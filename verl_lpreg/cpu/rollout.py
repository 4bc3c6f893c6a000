"""An "hf" rollout backend for verl 0.9.1: transformers on CPU instead of vLLM/SGLang.

Three pieces, all registered through verl's own registries (no verl file is modified):

* :class:`HFRolloutServer` — a Ray actor holding a ``transformers`` causal LM. It serves
  ``generate(request_id, prompt_ids, sampling_params, ...) -> TokenOutput`` the way
  ``verl/workers/rollout/vllm_rollout/vllm_async_server.py`` does: concurrent requests are
  gathered into one left-padded ``model.generate`` batch per sampling setting. With
  ``logprobs`` asked for (``rollout.calculate_log_probs``) it returns the per-token
  log-probs of the sampled tokens at the sampling temperature.
* :class:`HFRolloutReplica` — the :class:`~verl.workers.rollout.replica.RolloutReplica`
  registered as ``"hf"`` in ``RolloutReplicaRegistry`` (verl/workers/rollout/replica.py).
* :class:`HFServerAdapter` — the :class:`~verl.workers.rollout.base.BaseRollout` that lives in
  the actor worker (registered for ``("hf", "async")`` in ``_ROLLOUT_REGISTRY``,
  verl/workers/rollout/base.py). verl's naive checkpoint engine calls its ``update_weights``
  after each step with the actor's full parameters; it ships them to the server.

Meant for tiny models and tests: no paged KV cache, no continuous batching.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
import torch
from omegaconf import DictConfig
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from verl_lpreg.evaluate import left_pad

logger = logging.getLogger(__name__)

SERVER_NAME_PREFIX = "hf_"


def _to_dataclass(cfg, cls):
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, DictConfig):
        return omega_conf_to_dataclass(cfg, dataclass_type=cls if "_target_" not in cfg else None)
    return cfg


def _eos_ids(model_config: HFModelConfig, hf_generation_config) -> list[int]:
    ids: list[int] = []
    for src in (
        getattr(hf_generation_config, "eos_token_id", None),
        getattr(model_config.generation_config, "eos_token_id", None) if model_config.generation_config else None,
        getattr(model_config.tokenizer, "eos_token_id", None) if model_config.tokenizer is not None else None,
    ):
        if src is None:
            continue
        for i in src if isinstance(src, (list, tuple)) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


class HFRolloutServer:
    """Ray actor: token-in/token-out generation with ``transformers`` (async, batched)."""

    def __init__(self, config: RolloutConfig, model_config, replica_rank: int = 0, batch_wait_s: float = 0.02):
        from transformers import AutoModelForCausalLM

        self.config: RolloutConfig = _to_dataclass(config, RolloutConfig)
        self.model_config: HFModelConfig = _to_dataclass(model_config, HFModelConfig)
        self.replica_rank = replica_rank
        self.batch_wait_s = batch_wait_s
        self.global_steps: int | None = None
        num_threads = int(os.environ.get("VERL_LPREG_ROLLOUT_THREADS", "0"))
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        path = self.model_config.local_path or self.model_config.path
        self.model = AutoModelForCausalLM.from_pretrained(
            path,
            torch_dtype=torch.float32,
            attn_implementation="eager",
            trust_remote_code=self.model_config.trust_remote_code,
        )
        self.model.eval()
        self.eos_ids = _eos_ids(self.model_config, self.model.generation_config)
        tok = self.model_config.tokenizer
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        self.pad_id = int(pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0))
        self.generator = torch.Generator().manual_seed(int(self.config.seed) + replica_rank)
        torch.manual_seed(int(self.config.seed) + replica_rank)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_rollout")
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._batch_task: asyncio.Task | None = None
        self.num_generated_requests = 0
        self.num_weight_updates = 0

    # ------------------------------------------------------------------ control (no-ops on CPU)
    async def ready(self) -> bool:
        return True

    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None

    async def wait_for_requests_to_drain(self):
        while self._pending or (self._batch_task is not None and not self._batch_task.done()):
            await asyncio.sleep(0.01)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self):
        return None

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    async def stats(self) -> dict:
        return {"num_generated_requests": self.num_generated_requests, "num_weight_updates": self.num_weight_updates}

    # ------------------------------------------------------------------ weights
    def _load_weights(self, state: dict[str, torch.Tensor]) -> int:
        own = self.model.state_dict()
        loaded = 0
        with torch.no_grad():
            for name, tensor in state.items():
                if name in own:
                    own[name].copy_(tensor.to(own[name].dtype))
                    loaded += 1
        self.num_weight_updates += 1
        return loaded

    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        loaded = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_weights, state)
        if global_steps is not None:
            self.global_steps = global_steps
        return loaded

    async def get_weights_checksum(self) -> float:
        """Sum of all parameters (tests use it to see a weight update land)."""
        return float(sum(p.double().sum().item() for p in self.model.parameters()))

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        request_id: str = None,
        prompt_ids: list[int] = None,
        sampling_params: dict[str, Any] = None,
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> TokenOutput:
        if image_data is not None or video_data is not None:
            raise NotImplementedError("the hf rollout backend is text-only")
        sp = dict(sampling_params or {})
        prompt_ids = [int(t) for t in (prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else prompt_ids)]
        max_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        room = max_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room within {max_len}")
        if "max_tokens" in sp:
            max_tokens = sp.pop("max_tokens")
        elif "max_new_tokens" in sp:
            max_tokens = sp.pop("max_new_tokens")
        else:
            max_tokens = min(
                self.config.response_length, self.config.prompt_length + self.config.response_length - len(prompt_ids)
            )
        max_tokens = max(1, min(int(max_tokens), room))
        req = {
            "prompt_ids": prompt_ids,
            "max_tokens": max_tokens,
            "temperature": float(sp.get("temperature", 1.0) or 0.0),
            "top_p": float(sp.get("top_p", 1.0) if sp.get("top_p") is not None else 1.0),
            "top_k": int(sp.get("top_k", -1) if sp.get("top_k") is not None else -1),
            "logprobs": bool(sp.get("logprobs", False)),
            "ignore_eos": bool(sp.get("ignore_eos", self.config.ignore_eos)),
        }
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((req, fut))
        if self._batch_task is None or self._batch_task.done():
            self._batch_task = asyncio.create_task(self._batch_loop())
        token_ids, log_probs = await fut
        self.num_generated_requests += 1
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if req["logprobs"] else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def _batch_loop(self):
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(self.batch_wait_s)  # let concurrent requests pile up
            batch, self._pending = self._pending, []
            groups: dict[tuple, list] = {}
            for req, fut in batch:
                key = (req["temperature"], req["top_p"], req["top_k"], req["ignore_eos"], req["max_tokens"])
                groups.setdefault(key, []).append((req, fut))
            for key, items in groups.items():
                max_bs = max(1, int(self.config.max_num_seqs or 256))
                for i in range(0, len(items), max_bs):
                    chunk = items[i : i + max_bs]
                    try:
                        results = await loop.run_in_executor(
                            self._executor, self._generate_batch, [r for r, _ in chunk], key
                        )
                    except Exception as e:  # surface the error to every waiting request
                        for _, fut in chunk:
                            if not fut.done():
                                fut.set_exception(e)
                        continue
                    for (_, fut), res in zip(chunk, results, strict=True):
                        if not fut.done():
                            fut.set_result(res)

    @torch.no_grad()
    def _generate_batch(self, reqs: list[dict], key: tuple) -> list[tuple[list[int], list[float]]]:
        from transformers import GenerationConfig

        temperature, top_p, top_k, ignore_eos, max_tokens = key
        input_ids, attention_mask = left_pad([r["prompt_ids"] for r in reqs], self.pad_id)
        width = input_ids.shape[1]
        do_sample = temperature > 0
        gen_cfg = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample and top_p < 1.0 else None,
            top_k=top_k if do_sample and top_k > 0 else None,
            eos_token_id=None if ignore_eos else (self.eos_ids or None),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=True,
            use_cache=True,
        )
        if ignore_eos:
            gen_cfg.min_new_tokens = max_tokens
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_cfg)
        new_tokens = out.sequences[:, width:]
        if out.logits:
            logits = torch.stack(out.logits, dim=1).float()  # (B, T, V), raw model logits
            if do_sample:
                logits = logits / temperature
            lp = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens[:, : logits.shape[1]].unsqueeze(-1))
            lp = lp.squeeze(-1)
        else:
            lp = torch.zeros_like(new_tokens, dtype=torch.float32)
        results = []
        eos = set(self.eos_ids) if not ignore_eos else set()
        for i in range(len(reqs)):
            toks = new_tokens[i].tolist()
            n = len(toks)
            for j, t in enumerate(toks):
                if t in eos:
                    n = j + 1  # keep the stop token, like vLLM's token_ids
                    break
            results.append((toks[:n], [float(x) for x in lp[i, :n].tolist()]))
        return results


class HFRolloutReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica (hybrid, colocated or standalone mode)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(HFRolloutServer)

    def _get_server_name_prefix(self) -> str:
        return SERVER_NAME_PREFIX

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self):
        prefix = self._get_server_name_prefix()
        if self.is_reward_model:
            name = f"{prefix}server_reward_{self.replica_rank}_0{self.name_suffix}"
        elif self.is_teacher_model:
            name = f"{prefix}server_teacher_{self.replica_rank}_0{self.name_suffix}"
        else:
            name = f"{prefix}server_{self.replica_rank}_0{self.name_suffix}"
        options: dict[str, Any] = {"name": name, "max_concurrency": self.max_concurrency, "num_cpus": 0}
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = self.server_class.options(**options).remote(
            config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{name}.local:0"


class HFServerAdapter(BaseRollout):
    """Lives in the actor worker; pushes the actor's weights to the replica's server actor."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh=None, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.is_leader_rank = self.rollout_rank == 0
        self.server_handle = None
        self.sleep_level = 1

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(f"{SERVER_NAME_PREFIX}server_{self.replica_rank}_0")
        return self.server_handle

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", global_steps: int = None, **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout: wire_format={wire_format!r} is not supported")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("hf rollout: LoRA adapters are not supported (use model.lora.merge=True)")
        state: dict[str, torch.Tensor] = {}
        if hasattr(weights, "__aiter__"):
            async for name, tensor in weights:
                state[name] = tensor.detach().to("cpu", copy=True)
        else:
            for name, tensor in weights:  # every rank iterates: full_tensor() is a collective
                state[name] = tensor.detach().to("cpu", copy=True)
        if self.is_leader_rank:
            await self._server().update_weights.remote(state, global_steps=global_steps)
