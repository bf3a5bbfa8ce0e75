"""Sampling k responses per problem: vLLM when it is installed, Hugging Face ``generate`` otherwise.

Both back-ends take chat messages, apply the model's chat template with the generation prompt, and
sample ``k`` responses per problem with the same :class:`Sampling`. Each problem is seeded with
``seed + problem index``, so a problem's samples do not depend on which other problems share its batch,
and a resumed evaluation reproduces an uninterrupted one.

Sampling defaults (ours; the paper does not publish its evaluation sampling): temperature 0.6,
top-p 0.95, at most 32768 new tokens, DeepSeek's recommended settings for R1-distilled models and the
common practice of DeepScaleR / Skywork-OR1 / Archer evaluations.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one evaluation (recorded in ``summary.json``)."""

    k: int = 32
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One sampled response."""

    text: str
    tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


class HFGenerator:
    """Hugging Face ``generate`` on whatever device torch has (CPU in the tests); one problem per call."""

    name = "hf"

    def __init__(self, model_path: str, dtype: str = "auto", device: Optional[str] = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        torch_dtype = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
        if torch_dtype == "auto" and self.device == "cpu":
            torch_dtype = torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device).eval()
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, messages: Sequence[dict], sampling: Sampling, problem_index: int) -> list[Generation]:
        torch = self.torch
        prompt = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        input_ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        max_new = sampling.max_new_tokens
        if self.max_positions is not None and input_ids.shape[1] + max_new > self.max_positions:
            max_new = max(1, self.max_positions - input_ids.shape[1])
            logger.warning("max_new_tokens cut to %d by the model's %d positions", max_new, self.max_positions)
        torch.manual_seed(sampling.seed + problem_index)
        greedy = sampling.temperature == 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None if greedy else 0,
                max_new_tokens=max_new,
                num_return_sequences=sampling.k,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
            )
        results = []
        for row in out[:, input_ids.shape[1] :].tolist():
            stop = self.tokenizer.eos_token_id in row
            tokens = row[: row.index(self.tokenizer.eos_token_id) + 1] if stop else row
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            results.append(Generation(text=text, tokens=len(tokens), finish_reason="stop" if stop else "length"))
        return results

    def generate_many(self, batch: Sequence[tuple[int, Sequence[dict]]], sampling: Sampling) -> list[list[Generation]]:
        return [self.generate(messages, sampling, index) for index, messages in batch]


class VLLMGenerator:
    """vLLM offline engine; a whole chunk of problems per call, each problem seeded on its own."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_model_len: Optional[int] = None,
        gpu_memory_utilization: float = 0.9,
    ) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            trust_remote_code=True,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate_many(self, batch: Sequence[tuple[int, Sequence[dict]]], sampling: Sampling) -> list[list[Generation]]:
        from vllm import SamplingParams

        prompts = [self.tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False) for _, m in batch]
        params = [
            SamplingParams(
                n=sampling.k,
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens,
                seed=sampling.seed + index,
            )
            for index, _ in batch
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [Generation(text=o.text, tokens=len(o.token_ids), finish_reason=str(o.finish_reason or "stop")) for o in out.outputs]
            for out in outputs
        ]


def make_generator(backend: str, model_path: str, **kwargs):
    """``backend`` is ``"auto"`` (vLLM if importable, else HF), ``"vllm"`` or ``"hf"``."""
    if backend not in ("auto", "vllm", "hf"):
        raise ValueError(f"--backend must be one of auto, vllm, hf; got {backend!r}")
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        if not vllm_available():
            raise ValueError("--backend vllm: vllm is not installed (pip install 'verl-dgpo[gpu]')")
        return VLLMGenerator(model_path, **{k: v for k, v in kwargs.items() if k != "device"})
    hf_kwargs = {k: v for k, v in kwargs.items() if k in ("dtype", "device")}
    return HFGenerator(model_path, **hf_kwargs)
