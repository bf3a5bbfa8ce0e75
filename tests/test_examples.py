"""The runnable examples: GSM8K preparation on a local fixture, and the 0.5B example's composed config."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf



ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "dgpo_trainer"


def test_prepare_gsm8k_writes_parquet_that_verls_dataset_loads(tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_dgpo.local.assets import make_tokenizer

    fixture = ROOT / "tests" / "fixtures" / "gsm8k_sample.jsonl"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "prepare_gsm8k.py"), "--source", str(fixture), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    config = OmegaConf.create({"max_prompt_length": 256, "filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    dataset = RLHFDataset(str(tmp_path / "train.parquet"), make_tokenizer(), config)
    assert len(dataset) == 3
    truths = [dataset.dataframe[i]["reward_model"]["ground_truth"] for i in range(3)]
    assert truths == ["7", "950", "-3"]  # the number after '####'; "1,200" in the text does not leak in
    item = dataset[0]
    assert item["data_source"] == "openai/gsm8k"
    assert "apples" in item["raw_prompt"][0]["content"] and '"####"' in item["raw_prompt"][0]["content"]


def test_gsm8k_example_composes_with_dgpo():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "run_qwen2_5_0_5b_gsm8k_dgpo.sh"), "--cfg", "job", "--resolve"],
        capture_output=True, text=True, env=env, timeout=300, cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["loss_mode"] == "dgpo"
    assert cfg["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 5
