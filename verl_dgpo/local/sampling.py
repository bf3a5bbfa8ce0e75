"""Token sampling that a seed reproduces: one helper for the ``hf`` rollout, the warm start and the evaluator.

:func:`sample_from_logits` turns next-token logits into tokens the way Hugging Face ``generate`` does with
``do_sample=True`` — temperature, then top-k, then top-p (nucleus) — or greedily at temperature 0. The
randomness is explicit: each row's token is the first whose cumulative probability exceeds a uniform draw
``u ~ U[0, 1)`` (inverse CDF), and ``u`` comes from

- one :class:`torch.Generator` per row (``generator=[g_0, g_1, ...]``): a row's token depends only on its
  own generator and logits, never on which other rows share the batch;
- one generator for the whole batch (``generator=g``), drawing the rows' uniforms in row order;
- torch's global stream (``generator=None``).

:func:`generate_tokens` is the autoregressive loop around it (left padding, positions from the attention
mask, stop at end-of-sequence), and :func:`request_seed` derives a per-request seed from the values that
identify a request (run seed, training step, prompt tokens, which sample of that prompt), so that a
request's response depends on exactly those, not on how concurrent requests were batched.

Pure torch: no verl import.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, Union

import torch

Generators = Union[None, torch.Generator, Sequence[torch.Generator]]


def request_seed(seed: int, step: int, prompt: Sequence[int], identity) -> int:
    """A 63-bit seed determined by exactly these four values (``identity``: an int or a request id string)."""
    digest = hashlib.sha256(repr((int(seed), int(step), tuple(int(t) for t in prompt), identity)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative probability exceeds that row's uniform draw."""
    cdf = probs.double().cumsum(-1)
    cdf = cdf / cdf[:, -1:]  # a total of exactly 1 despite rounding
    index = torch.searchsorted(cdf, uniforms.double()[:, None], right=True).squeeze(-1)
    return index.clamp(max=probs.shape[-1] - 1)


def filtered_probabilities(logits: torch.Tensor, *, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """softmax(logits / T) restricted to the top-k tokens (``top_k > 0``) and then to the nucleus
    (the most probable tokens whose mass first reaches ``top_p``; ``top_p < 1``), renormalised.
    The most probable token is always kept."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    scores = logits.float() / temperature
    vocab = scores.shape[-1]
    if top_k and 0 < top_k < vocab:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _uniforms(rows: int, generator: Generators) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(rows, generator=generator, dtype=torch.float64)
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for {rows} rows; give one per row")
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generator])


def sample_from_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       generator: Generators = None) -> torch.Tensor:
    """One token per row of ``logits`` (``(rows, vocab)``); greedy (argmax, no draw) at ``temperature == 0``."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filtered_probabilities(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return inverse_cdf_sample(probs, _uniforms(logits.shape[0], generator))


@torch.no_grad()
def generate_tokens(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, pad_id: int, eos_ids,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    generator: Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per prompt; return (new tokens, their log-probabilities under the raw,
    untempered logits), each ``(len(prompts), steps)``. After a row's end-of-sequence token its later
    positions hold ``pad_id``. The prefix is recomputed at every step (no KV cache), so a row's logits do
    not depend on cache layout; fine for the short responses of the local preset."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):  # left padding
        ids[i, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[i, width - len(prompt):] = 1
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :].float()
        nxt = sample_from_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        logps.append(torch.log_softmax(logits, dim=-1).gather(-1, nxt[:, None]).squeeze(-1))
        done |= torch.isin(nxt, eos)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
        if bool(done.all()):
            break
    return torch.stack(tokens, dim=1), torch.stack(logps, dim=1)


def per_request_generators(seed: int, step: int, prompts: Sequence[Sequence[int]],
                           identities: Sequence) -> list[torch.Generator]:
    """One generator per request, seeded by :func:`request_seed`."""
    return [torch.Generator().manual_seed(request_seed(seed, step, p, i)) for p, i in zip(prompts, identities)]


__all__ = [
    "request_seed",
    "inverse_cdf_sample",
    "filtered_probabilities",
    "sample_from_logits",
    "generate_tokens",
    "per_request_generators",
]
