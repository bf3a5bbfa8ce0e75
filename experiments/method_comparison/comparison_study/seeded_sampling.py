"""Rollout sampling that one seed reproduces, for the study's runs on the local ``hf`` rollout backend.

The ``hf`` rollout server (:mod:`verl_dgpo.local.hf_rollout`) batches the concurrent ``generate`` requests
that arrive within a few milliseconds and samples the whole batch from torch's global random stream, so
which response a prompt gets depends on arrival timing (how the requests were batched and in which
order), not only on ``actor_rollout_ref.rollout.seed``. For a comparison whose seeds must reproduce,
:func:`install` (called by :mod:`comparison_study.plugin`, i.e. only in the comparison's runs) replaces the server's batch sampler
with one where **every request draws from its own generator**, seeded by

    sha256(rollout seed, training step, prompt token ids, request identity)

and sampled by inverse CDF (``u ~ U[0,1)`` from that generator, token = first index whose cumulative
probability exceeds ``u``). A request's response therefore depends only on the seed, the step, its
prompt, the weights and which sample it is — never on batching. The request identity is verl's request id
when it is deterministic (``det-<index of the sample in the batch>``, which verl's agent loop sends under
``actor_rollout_ref.rollout.full_determinism=true``; the study sets it), so each sample of the training
batch gets the same response on a rerun and the batch order — hence every mini-batch's floating-point
sums — is reproduced. Otherwise it is the occurrence of the prompt within the step in arrival order (the
``n`` copies of a prompt are exchangeable, so the group is reproduced up to the order of its samples).

Same distribution as Hugging Face ``generate(do_sample=True)`` at temperature T with no top-p / top-k:
softmax(logits / T) of the last position, left padding, positions from the attention mask. Other
sampling settings (greedy, top-p < 1, top-k > 0) fall back to the server's own sampler. Log-probabilities
returned are those of the raw (untempered) logits, as the server returns them.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Optional

import torch

ROLLOUT_MODULE = "verl_dgpo.local.hf_rollout"
#: verl's agent loop names requests ``det-<sample index>`` under ``actor_rollout_ref.rollout.full_determinism``.
DETERMINISTIC_ID_PREFIX = "det-"


def request_seed(seed: int, step: int, prompt: tuple[int, ...], occurrence) -> int:
    """A 63-bit seed that depends on exactly these four values (``occurrence``: an int or verl's request id)."""
    digest = hashlib.sha256(repr((int(seed), int(step), tuple(prompt), occurrence)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first token whose cumulative probability exceeds that row's uniform draw."""
    cdf = probs.double().cumsum(-1)
    cdf = cdf / cdf[:, -1:]  # exact total of 1 despite rounding
    index = torch.searchsorted(cdf, uniforms.double()[:, None], right=True).squeeze(-1)
    return index.clamp(max=probs.shape[-1] - 1)


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], generators: list[torch.Generator], *, temperature: float,
                 max_new_tokens: int, pad_id: int, eos_ids: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(new tokens, their raw-logit log-probabilities), each ``(len(prompts), max_new_tokens)``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :].float()
        uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
        nxt = inverse_cdf_sample(torch.softmax(logits / temperature, dim=-1), uniforms)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        logps.append(torch.log_softmax(logits, dim=-1).gather(-1, nxt[:, None]).squeeze(-1))
        done |= torch.isin(nxt, eos)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
        if bool(done.all()):
            break
    return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)


def seeded_generate_batch(original):
    """The server's ``_generate_batch`` with per-request seeded sampling (see the module docstring)."""

    def _generate_batch(self, prompts: list[list[int]], key: tuple):
        from verl_dgpo.local.hf_rollout import cut_after_eos

        temperature, top_p, top_k, want_logprobs = key
        if not temperature or temperature <= 0 or (top_p is not None and top_p < 1.0) or (top_k or 0) > 0:
            return original(self, prompts, key)
        width = max(len(p) for p in prompts)
        max_new = min(int(self.config.response_length), self.max_model_len - width)
        if max_new <= 0:
            return original(self, prompts, key)
        step = int(self.global_steps or 0)
        seen: dict = self.__dict__.setdefault("_study_seen", {})
        if seen.get("__step__") != step:
            seen.clear()
            seen["__step__"] = step
        base_seed = int(getattr(self.config, "seed", 0) or 0) + int(getattr(self, "replica_rank", 0))
        ids = self.__dict__.get("_study_request_ids", {})
        generators = []
        for prompt in prompts:
            k = tuple(prompt)
            queue = ids.get(k)
            request_id = queue.popleft() if queue else None
            if isinstance(request_id, str) and request_id.startswith(DETERMINISTIC_ID_PREFIX):
                identity = request_id  # verl's per-sample id: the response follows the sample, not arrival order
            else:
                identity = seen.get(k, 0)
                seen[k] = identity + 1
            generators.append(torch.Generator().manual_seed(request_seed(base_seed, step, k, identity)))
        tokens, logps = sample_batch(self.model, prompts, generators, temperature=float(temperature),
                                     max_new_tokens=max_new, pad_id=self.pad_id, eos_ids=self.eos_ids)
        results = []
        for i in range(len(prompts)):
            token_ids, finished = cut_after_eos(tokens[i].tolist(), self.eos_ids)
            logprobs: Optional[list] = logps[i, : len(token_ids)].tolist() if want_logprobs else None
            results.append((token_ids, logprobs, finished))
        return results

    _generate_batch.__study_seeded__ = True
    return _generate_batch


def recording_generate(original):
    """The server's ``generate``, which first files the request id under its prompt (FIFO per prompt).

    The server appends each request to its queue synchronously, in call order, so the k-th queued copy of
    a prompt in a batch is the k-th recorded id of that prompt.
    """

    async def generate(self, prompt_ids, sampling_params, request_id, *args, **kwargs):
        ids = self.__dict__.setdefault("_study_request_ids", {})
        ids.setdefault(tuple(prompt_ids), collections.deque()).append(request_id)
        return await original(self, prompt_ids, sampling_params, request_id, *args, **kwargs)

    generate.__study_seeded__ = True
    return generate


def _patch(server_cls) -> None:
    if not getattr(server_cls._generate_batch, "__study_seeded__", False):
        server_cls._generate_batch = seeded_generate_batch(server_cls._generate_batch)
    if not getattr(server_cls.generate, "__study_seeded__", False):
        server_cls.generate = recording_generate(server_cls.generate)


def install() -> bool:
    """Swap the ``hf`` server's batch sampler for the seeded one (idempotent).

    In the rollout server's own process Ray imports :mod:`verl_dgpo.local.hf_rollout` first, that import
    runs ``import verl``, and verl imports the comparison's plugin (hence this) while ``hf_rollout`` is still
    half-executed, before its class exists. In that case the patch is applied the moment the class is
    built: ``builtins.__build_class__`` is wrapped until ``HFRolloutServer`` of that module is created,
    then restored.
    """
    import builtins
    import sys

    module = sys.modules.get(ROLLOUT_MODULE)
    if module is not None and not hasattr(module, "HFRolloutServer"):  # half-imported: patch on creation
        original_build = builtins.__build_class__

        def build_class(func, name, *args, **kwargs):
            cls = original_build(func, name, *args, **kwargs)
            if name == "HFRolloutServer" and getattr(cls, "__module__", None) == ROLLOUT_MODULE:
                builtins.__build_class__ = original_build
                _patch(cls)
            return cls

        builtins.__build_class__ = build_class
        return True
    try:
        from verl_dgpo.local import hf_rollout
    except ImportError:
        return False
    _patch(hf_rollout.HFRolloutServer)
    return True
