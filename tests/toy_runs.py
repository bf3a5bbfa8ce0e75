"""``TOY=1`` recipe launches and the checks every finished one must pass (tests/test_recipes_toy.py, and the
two-node run of tests/test_recipes_two_nodes.py)."""

import glob
import json
import os
import re

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
import stalled_runs  # tests/stalled_runs.py
from verl_dgpo.verl_glue import checkpoints

PASS_AT = ("pass@1", "pass@2", "pass@4")  # VAL_N=4 under TOY=1


def start(toy_dir, method, steps, log_name, toy_cache, size="1.5b", hydra=(), rollout="hf", stall=None, **env):
    """``TOY=1 bash recipes/run_<method>_<size>.sh [hydra]`` in ``toy_dir`` for ``steps`` steps (more variables in
    ``env``), its warm-started model from the session's cache ``toy_cache`` (tests/conftest.py: built once per session),
    generating with ``rollout`` (``TOY_ROLLOUT``: ``hf``, the CPU preset's server, or ``vllm``, the recipe's own);
    ``stall`` (``<stage>@<step>``, tests/stalled_runs.py) freezes that stage of that step."""
    env = launches.user_env(TOY="1", TOY_DIR=toy_dir, TOTAL_TRAINING_STEPS=str(steps), VERL_DGPO_TOY_CACHE=toy_cache,
                            TOY_ROLLOUT=rollout, **env)  # fmt: skip
    if stall:
        env = stalled_runs.stall_env(env, stall)
    script = os.path.join(launches.REPO, "recipes", f"run_{method}_{size}.sh")
    return launches.start(["bash", script, *hydra], toy_dir, os.path.join(toy_dir, log_name), env)


def run_metrics(toy_dir, since):
    """{step: metrics} from the file logger of the launch started at ``since`` (the local preset's metrics file;
    a TOY_DIR's launches run one after the other)."""
    steps = {}
    for path in glob.glob(os.path.join(toy_dir, "logs", "metrics-*.jsonl")):
        if os.path.getmtime(path) >= since:
            with open(path) as f:
                for line in f:
                    record = json.loads(line)
                    steps.setdefault(record["step"], {}).update(record["data"])
    return steps


def ckpt_dir(toy_dir, method, size="1.5b"):
    return os.path.join(toy_dir, "checkpoints", "verl-dgpo", f"{method}-{size}")


def check_trained_through_v1(method, run, resumed=False, size="1.5b"):
    """``run`` ({"dir", "log", "metrics", "steps"}) went through verl's v1 trainer (its replay-buffer metrics),
    logged ``val-core/.../pass@k`` before training (at the step it resumed from, if ``resumed``) and after its
    last step, and left a complete checkpoint of its last step, Hugging Face config included."""
    toy_dir, metrics, last = run["dir"], run["metrics"], run["steps"]
    assert "verl-dgpo: algorithm.adv_estimator=dgpo is passed to verl's v1 trainer as 'grpo'" in run["log"]
    assert any(k.startswith("training/off_policy/") for k in metrics[last]), "no v1 replay-buffer metrics"
    before = last - 1 if resumed else 0
    for step in (before, last):  # val_before_train, and the validation after the last step
        for k in PASS_AT:
            assert f"val-core/aime24/acc/{k}" in metrics[step] and f"val-core/math500/acc/{k}" in metrics[step], (step, k)
    folder = checkpoints.latest_complete(ckpt_dir(toy_dir, method, size))
    assert folder is not None and folder.step == last
    assert checkpoints.tracker_step(ckpt_dir(toy_dir, method, size)) == last
    hf_config = os.path.join(ckpt_dir(toy_dir, method, size), f"global_step_{last}", "actor", "huggingface", "config.json")
    assert os.path.isfile(hf_config)


def check_step_one_reward(method, metrics):
    """Step 1's reward is strictly between 0 and 1 and its gradient is not zero (the warm start answers in
    ``\\boxed{}``)."""
    step_one = metrics[1]
    print(f"{method} step-1 reward (critic/score/mean): {step_one['critic/score/mean']}")
    assert 0 < step_one["critic/score/mean"] < 1 and step_one["actor/grad_norm"] > 0


#: What a run's own output shows of its rollout engine: verl's vLLM server actor logs as ``vLLMHttpServer``, and
#: the closing summary counts the vLLM processes that recorded loading verl-dgpo's CPU support (vllm_cpu.register).
VLLM_SERVER_LOG = "(vLLMHttpServer pid="
VLLM_SUMMARY = re.compile(r"rollout engine: verl's vLLM rollout; vLLM (\S+) on CPU, (\d+) vLLM processes")
HF_ENGINE = "rollout: verl-dgpo's Hugging Face generate server"


def check_rollout_engine(log, engine, finished=True):
    """The run generated with ``engine``, as its own output shows (not the configuration it was given). A run
    killed before its end (``finished=False``) printed no closing summary: its server's log lines are the evidence."""
    summary = VLLM_SUMMARY.search(log)
    if engine == "vllm":
        assert VLLM_SERVER_LOG in log, "verl's vLLM server never logged"
        if finished:
            assert summary is not None and int(summary.group(2)) >= 1, "no vLLM process recorded verl-dgpo's CPU support"
        assert HF_ENGINE not in log
    else:
        assert (HF_ENGINE in log or not finished) and VLLM_SERVER_LOG not in log and summary is None
