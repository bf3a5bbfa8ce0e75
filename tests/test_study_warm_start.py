"""The SFT warm start reaches its documented accuracy on held-out prompts, measured independently here.

The warm start (``verl_dgpo.study.warm_start``) stops when its own sampler's held-out accuracy reaches
``target_accuracy`` (0.35 by default). This test re-measures it with Hugging Face ``generate`` (a
different sampler and random stream) on the same held-out strings, scoring with the task's own reward,
and checks the documented band (the warm start stops in [0.35, 0.5]; 0.30 to 0.55 here allows for sampling noise), i.e. competent but well below the ceiling.
"""

import os

import pytest
import torch

from verl_dgpo.study.warm_start import WarmStartSpec, ensure_warm_start, prompt_messages, split_strings


def shared_warm_start(tmp_path_factory) -> tuple[str, dict]:
    """One warm start per test session (ensure_warm_start re-uses the folder when the spec matches)."""
    out = os.path.join(str(tmp_path_factory.getbasetemp()), "study_warm_start")
    return out, ensure_warm_start(WarmStartSpec(), out, log=lambda m: None)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    return shared_warm_start(tmp_path_factory)


def test_heldout_strings_never_occur_in_training():
    train, heldout = split_strings(3, 200, seed=0)
    assert len(heldout) == 200 and len(train) == 800
    assert not set(train) & set(heldout)
    assert all(len(s) == 3 and s.isdigit() for s in train + heldout)


def test_prompt_is_the_rl_task_prompt():
    from verl_dgpo.local.task import make_rows

    for row in make_rows(5, digits=3, seed=4):
        assert prompt_messages(row["reward_model"]["ground_truth"]) == row["prompt"]


def test_warm_start_reaches_documented_heldout_accuracy(warm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_dgpo.local.task import score_copy

    path, record = warm
    spec = WarmStartSpec()
    assert record["heldout_accuracy"] >= spec.target_accuracy  # the stopping rule
    _, heldout = split_strings(spec.digits, spec.heldout_size, spec.seed)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template(prompt_messages(t), add_generation_prompt=True, tokenize=False) for t in heldout]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(1234)
    samples = 8
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4,
                             num_return_sequences=samples, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    responses = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    targets = [t for t in heldout for _ in range(samples)]
    accuracy = sum(score_copy(r, t) for r, t in zip(responses, targets)) / len(targets)
    assert 0.30 <= accuracy <= 0.55, accuracy
    # ... and the record's fresh re-measurement (another seed of the module's own sampler) agrees.
    assert abs(record["heldout_accuracy_remeasured"] - accuracy) < 0.1
