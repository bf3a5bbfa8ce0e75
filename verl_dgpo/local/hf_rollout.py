"""Rollout backend ``hf``: Hugging Face ``generate`` in a Ray actor, for verl's agent-loop trainer on CPU.

verl 0.9.1 resolves a rollout backend in two places, so :func:`verl_dgpo.local.boot.register_hf_rollout`
registers two classes (by name, so that this module is imported only where it is used):

- :class:`HFReplica` (``RolloutReplicaRegistry``, used by ``LLMServerManager`` in the trainer process)
  starts one :class:`HFRolloutServer` Ray actor per replica, next to the training worker it belongs to.
  The agent loop sends it one ``generate(prompt_ids, sampling_params, request_id)`` call per sample; the
  server queues concurrent calls, groups them by sampling parameters, left-pads each group into one
  batch and runs a single ``model.generate`` per group in a worker thread.
- :class:`HFServerAdapter` (``_ROLLOUT_REGISTRY[("hf", "async")]``, built inside each training worker)
  receives the actor's full weights after every optimizer step (``checkpoint_engine.backend=naive``) and
  ships them to its server, which loads them before the next generation.

Sampling. With ``actor_rollout_ref.rollout.engine_kwargs.hf.seeded_sampling=true`` (the local preset sets
it from ``local_cpu.rollout.seeded_sampling``) every request draws from its own generator, seeded by

    sha256(rollout seed + replica rank, training step, prompt token ids, request identity)

(:func:`verl_dgpo.local.sampling.request_seed`), so a request's response depends only on the seed, the
step, its prompt, the weights and which sample it is, never on how concurrent requests were batched. Which
sample it is (the request's identity) comes from what each request carries under each of verl's trainers:

- v0 under ``actor_rollout_ref.rollout.full_determinism=true``: verl's agent-loop manager numbers every
  sample of the batch (``det-<sample index>``), and that id is the identity (the preset says so with
  ``engine_kwargs.hf.unique_request_ids=true``): each sample of the batch gets the same response on a rerun.
- v1 (under either setting), and v0 without ``full_determinism``: the identity is the number of earlier
  requests of the same prompt and sampling parameters in this step, in arrival order. verl's v1 agent loop
  names every request ``det-0`` under ``full_determinism`` (and a random id otherwise), so its ids tell
  nothing apart; seeding by them would give every copy of a prompt the same response (a group of
  identical samples: zero advantage, zero gradient, no error). The ``n`` copies of a prompt are
  exchangeable, so a rerun samples the same responses for each prompt, up to their order.

Without the option the server samples the batch with Hugging Face ``generate`` from torch's global
stream, which depends on arrival timing. Both follow softmax(logits / T) with top-k, then top-p.

Only tensor-parallel size 1 is supported (one server per training rank); multimodal inputs are rejected.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Optional

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from verl_dgpo.local.sampling import generate_tokens, per_request_generators

logger = logging.getLogger(__name__)

#: Set by the tests: the server writes its weights after each sync to ``<dir>/rollout_step<N>.pt``.
DUMP_DIR_ENV = "VERL_DGPO_ROLLOUT_DUMP_DIR"
#: How long the server waits for concurrent requests to join a batch (seconds).
GATHER_WINDOW_S = 0.005


#: verl's agent loop names requests ``det-<sample index>`` under ``actor_rollout_ref.rollout.full_determinism``.
DETERMINISTIC_ID_PREFIX = "det-"


def hf_option(rollout_config, name: str, default=None):
    """``actor_rollout_ref.rollout.engine_kwargs.hf.<name>`` (dataclass or DictConfig), or ``default``."""
    engine_kwargs = getattr(rollout_config, "engine_kwargs", None) or {}
    hf = engine_kwargs.get("hf", None) or {}
    value = hf.get(name, None)
    return default if value is None else value


def server_actor_name(replica_rank: int) -> str:
    return f"verl_dgpo_hf_server_{replica_rank}"


def _sampling_key(params: dict[str, Any]) -> tuple:
    return (
        float(params.get("temperature", 1.0)),
        float(params.get("top_p", 1.0)),
        int(params.get("top_k", -1) or -1),
        bool(params.get("logprobs", False)),
    )


def cut_after_eos(token_ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Keep tokens up to and including the first end-of-sequence token; say whether one was found."""
    for i, tok in enumerate(token_ids):
        if tok in eos_ids:
            return token_ids[: i + 1], True
    return token_ids, False


class HFRolloutServer:
    """One rollout server: a Hugging Face causal LM that answers verl's token-in/token-out ``generate``."""

    def __init__(self, config, model_config, replica_rank: int = 0):
        from transformers import AutoModelForCausalLM

        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        torch.manual_seed(int(getattr(self.config, "seed", 0) or 0) + replica_rank)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_config.local_path, dtype=torch.float32, attn_implementation="sdpa"
        )
        tokenizer = self.model_config.tokenizer
        eos = {tokenizer.eos_token_id} if tokenizer is not None else set()
        self._attach(
            model,
            eos_ids=eos,
            pad_id=tokenizer.pad_token_id if tokenizer is not None else None,
            response_length=int(self.config.response_length),
            max_model_len=self.config.max_model_len,
            seeded_sampling=bool(hf_option(self.config, "seeded_sampling", False)),
            seed=int(getattr(self.config, "seed", 0) or 0) + replica_rank,
            unique_request_ids=bool(hf_option(self.config, "unique_request_ids", False)),
        )

    def _attach(self, model, *, eos_ids: set, pad_id: Optional[int], response_length: int, max_model_len=None,
                seeded_sampling: bool = False, seed: int = 0, unique_request_ids: bool = False) -> None:
        """Serve ``model``: stop at any of ``eos_ids`` (plus the model's own), pad with ``pad_id``;
        ``seeded_sampling``: per-request generators seeded from ``seed`` (see the module docstring);
        ``unique_request_ids``: verl's deterministic request ids name one sample each (its v0 trainer)."""
        self.model = model.eval()
        gen_eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos_ids) | set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids.discard(None)
        if not self.eos_ids:
            raise ValueError("the rollout model has no end-of-sequence token (tokenizer.eos_token_id)")
        self.pad_id = pad_id if pad_id is not None else min(self.eos_ids)
        self.response_length = response_length
        self.max_model_len = int(max_model_len or model.config.max_position_embeddings)
        self.seeded_sampling = seeded_sampling
        self.seed = seed
        self.unique_request_ids = unique_request_ids
        self.global_steps: Optional[int] = None
        self.weight_syncs = 0
        self._occurrences: dict = {}  # (prompt, sampling key) -> requests of it seen in this step
        self._pending: list[tuple[tuple, list[int], Any, asyncio.Future]] = []
        self._drainer: Optional[asyncio.Task] = None
        self._model_lock: Optional[asyncio.Lock] = None

    def ready(self) -> bool:
        return True

    # --- generation -------------------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[Any] = None,
        video_data: Optional[Any] = None,
        **kwargs,
    ):
        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise NotImplementedError("the 'hf' rollout backend is text-only (multimodal inputs were given)")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((_sampling_key(sampling_params), list(prompt_ids), request_id, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        token_ids, log_probs, finished = await future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _lock(self) -> asyncio.Lock:
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        return self._model_lock

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(GATHER_WINDOW_S)  # let the other concurrent requests of this step arrive
            batch, self._pending = self._pending, []
            groups: dict[tuple, list] = {}
            for key, prompt, request_id, future in batch:
                groups.setdefault(key, []).append((prompt, request_id, future))
            for key, items in groups.items():
                try:
                    async with self._lock():
                        results = await asyncio.to_thread(
                            self._generate_batch, [p for p, _, _ in items], key, [r for _, r, _ in items]
                        )
                except Exception as err:  # noqa: BLE001 - hand the error to every waiting request
                    for _, _, future in items:
                        if not future.done():
                            future.set_exception(err)
                    continue
                for (_, _, future), result in zip(items, results):
                    if not future.done():
                        future.set_result(result)

    def request_identities(self, prompts: list[list[int]], request_ids: Optional[list], key: tuple = ()) -> list:
        """Which sample of its prompt each request is (see the module docstring): verl's deterministic
        request id when ``unique_request_ids`` says it names one sample (v0), otherwise the number of
        earlier requests of the same prompt and sampling parameters ``key`` in this training step."""
        step = int(self.global_steps or 0)
        if self._occurrences.get("__step__") != step:
            self._occurrences = {"__step__": step}
        identities = []
        for prompt, request_id in zip(prompts, request_ids or [None] * len(prompts)):
            if self.unique_request_ids and isinstance(request_id, str) and request_id.startswith(DETERMINISTIC_ID_PREFIX):
                identities.append(request_id)
                continue
            counter = (tuple(prompt), key)
            identities.append(self._occurrences.get(counter, 0))
            self._occurrences[counter] = identities[-1] + 1
        return identities

    @torch.no_grad()
    def _generate_batch(
        self, prompts: list[list[int]], key: tuple, request_ids: Optional[list] = None
    ) -> list[tuple[list[int], Optional[list], bool]]:
        temperature, top_p, top_k, want_logprobs = key
        width = max(len(p) for p in prompts)
        max_new = min(self.response_length, self.max_model_len - width)
        if max_new <= 0:
            raise ValueError(f"prompt of {width} tokens leaves no room below max_model_len={self.max_model_len}")
        if self.seeded_sampling:
            return self._sample_seeded(prompts, key, request_ids, max_new)
        return self._sample_with_hf_generate(prompts, key, max_new)

    def _sample_seeded(self, prompts, key, request_ids, max_new):
        temperature, top_p, top_k, want_logprobs = key
        step = int(self.global_steps or 0)
        generators = per_request_generators(self.seed, step, prompts, self.request_identities(prompts, request_ids, key))
        tokens, logps = generate_tokens(
            self.model, prompts, max_new_tokens=max_new, pad_id=self.pad_id, eos_ids=self.eos_ids,
            temperature=max(float(temperature), 0.0), top_k=max(int(top_k), 0), top_p=float(top_p),
            generator=generators,
        )
        results = []
        for i in range(len(prompts)):
            token_ids, finished = cut_after_eos(tokens[i].tolist(), self.eos_ids)
            logprobs = logps[i, : len(token_ids)].tolist() if want_logprobs else None
            results.append((token_ids, logprobs, finished))
        return results

    def _sample_with_hf_generate(self, prompts, key, max_new):
        from transformers import GenerationConfig

        temperature, top_p, top_k, want_logprobs = key
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):  # left padding
            input_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[i, width - len(prompt) :] = 1
        do_sample = temperature > 0
        generation_config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample and top_p < 1.0 else None,
            top_k=top_k if do_sample and top_k > 0 else 0,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=want_logprobs,
        )
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config)
        new_tokens = out.sequences[:, width:]
        if want_logprobs:
            # log-probabilities of the sampled tokens under the raw (untempered) logits, as verl compares them
            logits = torch.stack(out.logits, dim=1).float()
            token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens[..., None]).squeeze(-1)
        results = []
        for i in range(len(prompts)):
            token_ids, finished = cut_after_eos(new_tokens[i].tolist(), self.eos_ids)
            logprobs = token_logprobs[i, : len(token_ids)].tolist() if want_logprobs else None
            results.append((token_ids, logprobs, finished))
        return results

    # --- weight sync ------------------------------------------------------------------------------

    async def update_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> dict:
        """Load the actor's full weights; every model tensor must be covered except a tied output head."""
        async with self._lock():
            result = self.model.load_state_dict(named_tensors, strict=False)
            missing = [k for k in result.missing_keys if not self._is_tied(k)]
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"rollout weight sync mismatch: missing {missing}, unexpected {list(result.unexpected_keys)}"
                )
            self.global_steps = global_steps
            self.weight_syncs += 1
            dump_dir = os.environ.get(DUMP_DIR_ENV)
            if dump_dir:
                os.makedirs(dump_dir, exist_ok=True)
                state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                torch.save(state, os.path.join(dump_dir, f"rollout_step{global_steps}.pt"))
        return {"tensors": len(named_tensors), "global_steps": global_steps}

    def _is_tied(self, key: str) -> bool:
        return key == "lm_head.weight" and bool(getattr(self.model.config, "tie_word_embeddings", False))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # --- lifecycle calls verl makes on every backend; nothing to do for an in-memory HF model -------

    async def wake_up(self, *args, **kwargs):
        return None

    async def sleep(self, *args, **kwargs):
        return None

    async def clear_kv_cache(self, *args, **kwargs):
        return None

    async def release_kv_cache(self, *args, **kwargs):
        return None

    async def resume_kv_cache(self, *args, **kwargs):
        return None

    async def abort_all_requests(self, *args, **kwargs) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self, *args, **kwargs):
        return None

    async def start_profile(self, *args, **kwargs):
        return None

    async def stop_profile(self, *args, **kwargs):
        return None


class HFReplica(RolloutReplica):
    """A rollout replica served by one :class:`HFRolloutServer` actor on its training worker's node."""

    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError(
                "rollout.name=hf supports tensor/data/pipeline parallel size 1 only "
                f"(got a rollout world size of {self.world_size})"
            )
        worker = self.workers[0]
        node_id = await worker.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
        name = server_actor_name(self.replica_rank)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                num_cpus=0,
                max_concurrency=self.max_concurrency,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf://{name}"


class HFServerAdapter(BaseRollout):
    """Training-worker side of the ``hf`` backend: forwards the actor's weights to this rank's server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        self.replica_rank = int(os.environ.get("RANK", 0))  # one replica per rank (world size 1 per replica)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"rollout.name=hf receives full named tensors, not {wire_format!r}")
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("rollout.name=hf does not take LoRA adapters; set model.lora.merge=True")
        state = {name: tensor.detach().to("cpu", copy=True).float() for name, tensor in weights}
        server = ray.get_actor(server_actor_name(self.replica_rank))
        await server.update_weights.remote(state, global_steps=kwargs.get("global_steps"))
