"""The comparison's SFT warm start: held-out split, prompt, sha256 guard, and the committed long-study checkpoint.

The committed warm start of the long study is re-measured here with Hugging Face ``generate`` (another
sampler and random stream than the warm start's own) on its held-out strings, scored with the task's own
reward, against the band the warm start stops in.
"""

import json
import os
import sys
from dataclasses import asdict

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "method_comparison")
sys.path.insert(0, EXPERIMENT)

from comparison_study.configs import LONG  # noqa: E402
from comparison_study.warm_start import (  # noqa: E402
    SPEC_FILE, WEIGHTS_FILE, WarmStartError, WarmStartSpec, ensure_warm_start, file_sha256, prompt_messages,
    split_strings,
)

LONG_WARM_START = os.path.join(EXPERIMENT, "results", "long", "warm_start")


def test_heldout_strings_never_occur_in_training():
    train, heldout = split_strings(3, 200, seed=0)
    assert len(heldout) == 200 and len(train) == 800
    assert not set(train) & set(heldout)
    assert all(len(s) == 3 and s.isdigit() for s in train + heldout)


def test_prompt_is_the_rl_task_prompt():
    from verl_dgpo.local.task import make_rows

    for row in make_rows(5, digits=3, seed=4):
        assert prompt_messages(row["reward_model"]["ground_truth"]) == row["prompt"]


def _fake_warm_start(tmp_path, spec, sha):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"weights")
    record = {"spec": asdict(spec), "steps": 1}
    if sha is not None:
        record["weights_sha256"] = sha
    (tmp_path / SPEC_FILE).write_text(json.dumps(record))


def test_warm_start_with_matching_sha_is_reused(tmp_path):
    spec = WarmStartSpec()
    _fake_warm_start(tmp_path, spec, None)
    _fake_warm_start(tmp_path, spec, file_sha256(str(tmp_path / WEIGHTS_FILE)))
    assert ensure_warm_start(spec, str(tmp_path), log=lambda m: None)["steps"] == 1


@pytest.mark.parametrize("case,message", [("mismatch", "refusing"), ("no sha", "not kept"), ("other spec", "another spec")])
def test_warm_start_refuses_weights_it_cannot_vouch_for(tmp_path, case, message):
    spec = WarmStartSpec()
    recorded = WarmStartSpec(digits=4) if case == "other spec" else spec
    _fake_warm_start(tmp_path, recorded, {"mismatch": "0" * 64, "no sha": None, "other spec": "0" * 64}[case])
    with pytest.raises(WarmStartError, match=message):
        ensure_warm_start(spec, str(tmp_path), log=lambda m: None)


def test_committed_long_warm_start_matches_its_record():
    with open(os.path.join(LONG_WARM_START, SPEC_FILE)) as f:
        record = json.load(f)
    assert record["spec"] == asdict(LONG.warm_start)
    assert file_sha256(os.path.join(LONG_WARM_START, WEIGHTS_FILE)) == record["weights_sha256"]
    assert LONG.warm_start.target_accuracy <= record["heldout_accuracy"] <= LONG.warm_start.max_accuracy


def test_committed_long_warm_start_accuracy_remeasured_with_hf_generate():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_dgpo.local.task import score_copy

    spec = LONG.warm_start
    _, heldout = split_strings(spec.digits, spec.heldout_size, spec.seed)
    tok = AutoTokenizer.from_pretrained(LONG_WARM_START)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(LONG_WARM_START, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template(prompt_messages(t), add_generation_prompt=True, tokenize=False) for t in heldout]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(1234)
    samples = 2
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=spec.max_new_tokens, num_return_sequences=samples,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    responses = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    targets = [t for t in heldout for _ in range(samples)]
    accuracy = sum(score_copy(r, t) for r, t in zip(responses, targets)) / len(targets)
    # 1000 samples: the sampling std is at most 0.016, so 0.05 either side of the band is a 3-sigma margin
    assert spec.target_accuracy - 0.05 <= accuracy <= spec.max_accuracy + 0.05, accuracy


@pytest.mark.rebuild
def test_long_warm_start_regenerates_bit_exactly(tmp_path):
    """A clone without the weights would retrain them: the retrained bytes must be the committed ones."""
    import shutil

    shutil.copy(os.path.join(LONG_WARM_START, SPEC_FILE), tmp_path / SPEC_FILE)
    record = ensure_warm_start(LONG.warm_start, str(tmp_path), log=lambda m: None)  # raises on a sha mismatch
    assert file_sha256(str(tmp_path / WEIGHTS_FILE)) == record["weights_sha256"]
