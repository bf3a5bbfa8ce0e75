"""Claims that must hold on every tested verl release (verl_dgpo.version.SUPPORTED_VERL) and on the next one
(verl's main branch, ../shared/verl-next/, checked by ``scripts/check_verl_release.sh --wheel``).

They run in the main environment with README's test command, and in a venv per other release through
``scripts/check_verl_release.sh X``. Each release is driven through its own code: its plugin loading,
its actor's policy-loss call site (0.7.1: ``workers/actor/dp_actor.py``; 0.8.0 on: the engine workers'
``workers/utils/losses.py::ppo_loss``), its ``compute_advantage``, its trainer yaml. Expected values are
written out by hand below, never taken from verl-dgpo's own code.
"""

import importlib.util
import math
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import verl_dgpo
import verl_dgpo.registry  # noqa: F401  (this process: verl 0.7.1/0.8.0 load it only when told to)
from verl_dgpo.version import SUPPORTED_VERL, has_entry_points, installed_verl_version, is_tested, untested_note

import warm_python  # tests/warm_python.py

ROOT = Path(__file__).resolve().parents[2]
VERL = installed_verl_version()
EPS_LOW, EPS_HIGH, N, M = 0.2, 0.28, 2.0, 1.5  # ε_low ≠ ε_high, n ≠ 1, m ≠ 2


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_python(code, **env):
    return warm_python.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=clean_env(**env), timeout=300, cwd="/",
    )  # fmt: skip


def test_this_release_is_a_tested_one_or_newer():
    from packaging.version import Version

    assert is_tested(VERL) or Version(VERL) > Version(SUPPORTED_VERL[-1]), f"verl {VERL}: add it to SUPPORTED_VERL"


def closed_form_weight(r, a, eps_low=EPS_LOW, eps_high=EPS_HIGH, n=N, m=M):
    """DGPO's weight on A·∇log π (arXiv 2603.14389), by hand."""
    if a < 0 and r < 1 - eps_low:
        return r ** (n + 1) / (1 - eps_low) ** n
    if a > 0 and r > 1 + eps_high:
        return (1 + eps_high) ** (1 / m) * r ** (1 - 1 / m)
    return r


# --- registration in a fresh process, by this release's own mechanism ------------------------------

REGISTRATION_PROBE = """
    import sys
    assert "verl_dgpo" not in sys.modules  # nothing of ours is imported before verl is
    import verl
    from verl.trainer.ppo import core_algos
    fn = core_algos.POLICY_LOSS_REGISTRY.get("dgpo")
    est = core_algos.ADV_ESTIMATOR_REGISTRY.get("dgpo")
    print("loss", getattr(fn, "__module__", None), "estimator", getattr(est, "__module__", None))
    import verl_dgpo
    try:
        print("mechanism", verl_dgpo.check_installed().replace(" ", "_"))
    except verl_dgpo.PluginNotInstalledError as err:
        print("refused", str(err).replace(" ", "_"))
"""


def test_fresh_process_registers_the_loss_by_this_releases_mechanism():
    plain = run_python(REGISTRATION_PROBE)
    assert plain.returncode == 0, plain.stderr
    words = plain.stdout.split()
    if has_entry_points(VERL):  # 0.9.x: `import verl` loads the verl.plugins entry point
        assert words[:4] == ["loss", "verl_dgpo.verl_glue.registration", "estimator", "verl_dgpo.verl_glue.registration"]
        assert words[4:] == ["mechanism", verl_dgpo.VIA_ENTRY_POINT.replace(" ", "_")]
    else:  # 0.7.1/0.8.0: nothing without the variable, and check_installed says so
        assert words[:4] == ["loss", "None", "estimator", "None"]
        assert words[4] == "refused" and "VERL_USE_EXTERNAL_MODULES" in words[5]

    named = run_python(REGISTRATION_PROBE, VERL_USE_EXTERNAL_MODULES="verl_dgpo.registry")
    assert named.returncode == 0, named.stderr
    assert named.stdout.split() == [
        "loss", "verl_dgpo.verl_glue.registration", "estimator", "verl_dgpo.verl_glue.registration",
        "mechanism", verl_dgpo.VIA_EXTERNAL_MODULES,
    ]  # fmt: skip


# --- the loss through this release's actor call site --------------------------------------------------


def verl_actor_config(mini_batch_size, micro_batch_size):
    """This release's own ppo_trainer.yaml, with our policy-loss config selected, as its workers build it."""
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    config_dir = os.path.join(os.path.dirname(core_algos.__file__), "..", "config")
    overrides = [
        "actor_rollout_ref.actor.policy_loss.loss_mode=dgpo",
        "actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig",
        f"+actor_rollout_ref.actor.policy_loss.dgpo_n={N}",
        f"+actor_rollout_ref.actor.policy_loss.dgpo_m={M}",
        f"actor_rollout_ref.actor.clip_ratio_low={EPS_LOW}",
        f"actor_rollout_ref.actor.clip_ratio_high={EPS_HIGH}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch_size}",
        "actor_rollout_ref.actor.grad_clip=1e9",  # 0.7.1's actor clips before its step; keep the raw gradient
        "actor_rollout_ref.rollout.n=1",
    ]
    with initialize_config_dir(config_dir=os.path.abspath(config_dir), version_base=None):
        cfg = compose("ppo_trainer", overrides=overrides)
    config = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert config.policy_loss.loss_mode == "dgpo" and config.policy_loss.dgpo_n == N
    return config


def random_batch(response_lengths, width, seed):
    g = torch.Generator().manual_seed(seed)
    bsz = len(response_lengths)
    mask = torch.tensor([[t < n for t in range(width)] for n in response_lengths])
    old = torch.randn(bsz, width, generator=g, dtype=torch.float64) - 2.0
    log_ratio = (torch.rand(bsz, width, generator=g, dtype=torch.float64) - 0.5) * 2.0  # r in [e^-1, e]
    adv = torch.randn(bsz, width, generator=g, dtype=torch.float64)
    return mask, old, log_ratio, adv


def expected_grad(rows, mask, log_ratio, adv):
    """d(token-mean loss over ``rows``)/d log π for each token: -A·w / (tokens in those rows)."""
    num_tokens = int(mask[rows].sum())
    grad = torch.zeros_like(log_ratio)
    for i in rows:
        for t in range(mask.shape[1]):
            if mask[i, t]:
                r, a = math.exp(log_ratio[i, t].item()), adv[i, t].item()
                grad[i, t] = -a * closed_form_weight(r, a) / num_tokens
    return grad


def uses_legacy_actor():
    """0.7.1 trains through DataParallelPPOActor (workers/actor/dp_actor.py); later releases have none."""
    from packaging.version import Version

    return importlib.util.find_spec("verl.workers.actor") is not None and Version(VERL) < Version("0.8")


@pytest.mark.skipif(not uses_legacy_actor(), reason="this release's actor is the engine's ppo_loss")
def test_dp_actor_update_policy_gives_the_closed_form_gradient():
    """verl 0.7.1's own ``DataParallelPPOActor.update_policy``: its loss call, scaling and optimizer step.

    The model is replaced by one parameter holding per-token log-probs (row i of the batch reads row i
    of it); two mini-batches make the update off-policy, so old_log_prob comes from the data.
    """
    import torch.distributed as dist
    from verl import DataProto
    from verl.workers.actor.dp_actor import DataParallelPPOActor

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29571", rank=0, world_size=1)
    lengths, width = [4, 2, 5, 3], 5
    mask, old, log_ratio, adv = random_batch(lengths, width, seed=1)
    holder = torch.nn.Module()
    holder.log_prob = torch.nn.Parameter((old + log_ratio).clone())
    grads = []
    holder.log_prob.register_hook(lambda g: grads.append(g.detach().clone()))
    optimizer = torch.optim.SGD(holder.parameters(), lr=0.1)
    actor = DataParallelPPOActor(verl_actor_config(mini_batch_size=2, micro_batch_size=2), holder, optimizer)
    actor._forward_micro_batch = lambda inputs, temperature, calculate_entropy=False, **kw: {
        "log_probs": holder.log_prob[inputs["input_ids"][:, 0]],
        "entropys": None,
    }
    bsz = len(lengths)
    data = DataProto.from_dict(
        tensors={
            "input_ids": torch.arange(bsz).unsqueeze(1).repeat(1, 3 + width),  # column 0: the row's index
            "attention_mask": torch.ones(bsz, 3 + width, dtype=torch.long),
            "position_ids": torch.arange(3 + width).repeat(bsz, 1),
            "responses": torch.ones(bsz, width, dtype=torch.long),
            "response_mask": mask.float(),
            "old_log_probs": old,
            "advantages": adv,
        },
        meta_info={"temperature": 1.0},
    )
    before = holder.log_prob.detach().clone()
    metrics = actor.update_policy(data)

    assert len(grads) == 2  # one backward per mini-batch (rows 0-1, then 2-3)
    for grad, rows in zip(grads, ([0, 1], [2, 3])):
        # The second mini-batch sees parameters the first step moved only in rows 0-1; its ratios are unchanged.
        torch.testing.assert_close(grad, expected_grad(rows, mask, log_ratio, adv), rtol=1e-6, atol=1e-12)
    assert not torch.equal(holder.log_prob.detach(), before)
    assert "actor/dgpo_ln_frac" in metrics


@pytest.mark.skipif(uses_legacy_actor(), reason="0.7.1 trains through dp_actor (test above)")
def test_engine_ppo_loss_gives_the_closed_form_gradient():
    """``verl.workers.utils.losses.ppo_loss``, as the engine workers call it (flat log-probs, padded data)."""
    from verl.workers.utils.losses import ppo_loss

    from verl_dgpo.verl_glue.contracts import engine_batch

    lengths, width = [4, 2, 5], 5
    mask, old, log_ratio, adv = random_batch(lengths, width, seed=2)
    bsz = len(lengths)
    data, flat_log_probs, positions = engine_batch(3, mask, old, log_ratio, adv)

    config = verl_actor_config(mini_batch_size=bsz, micro_batch_size=bsz)
    loss, metrics = ppo_loss(config, {"log_probs": flat_log_probs}, data)
    loss.backward()

    expected = expected_grad(list(range(bsz)), mask, log_ratio, adv)
    for i, row in enumerate(positions):
        for t, pos in enumerate(row):
            assert flat_log_probs.grad[pos].item() == pytest.approx(expected[i, t].item(), rel=1e-6)
    response_positions = {p for row in positions for p in row}
    others = [p for p in range(flat_log_probs.numel()) if p not in response_positions]
    assert all(flat_log_probs.grad[p].item() == 0.0 for p in others)
    assert "actor/dgpo_ln_frac" in metrics


# --- the estimator through this release's compute_advantage -----------------------------------------


def test_dgpo_estimator_through_compute_advantage_equals_the_hand_computation():
    import numpy as np
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    rewards = [1.0, 0.0, 0.0, 1.0, 3.0, 1.0]  # prompt "a": four responses; prompt "b": two
    index = np.array(["a"] * 4 + ["b"] * 2, dtype=object)
    lengths = [3, 2, 1, 3, 2, 3]
    mask = torch.tensor([[t < n for t in range(3)] for n in lengths], dtype=torch.float32)
    token_rewards = torch.zeros(6, 3)
    for i, (n, r) in enumerate(zip(lengths, rewards)):
        token_rewards[i, n - 1] = r
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": index},
    )
    out = compute_advantage(data, adv_estimator="dgpo", norm_adv_by_std_in_grpo=True)

    # group a: mean 0.5, unbiased std sqrt(1/3); group b: mean 2, unbiased std sqrt(2)
    by_hand = [(r - 0.5) / (math.sqrt(1 / 3) + 1e-6) for r in rewards[:4]]
    by_hand += [(r - 2.0) / (math.sqrt(2.0) + 1e-6) for r in rewards[4:]]
    expected = torch.tensor(by_hand).unsqueeze(-1) * mask
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-6)


# --- the trainer config and the version gate, through the entry point ---------------------------------


def run_entry(*args, fake_verl_version=None):
    """``python -m verl_dgpo.main ARGS`` in a fresh process (optionally with a faked installed verl version).

    At exit the process prints RAY_STARTED or NO_RAY to stderr: whether Ray was initialised.
    """
    lines = ["import atexit, runpy, sys"]
    if fake_verl_version:
        lines += [
            "import importlib.metadata as md",
            "_real = md.version",
            f"md.version = lambda name: {fake_verl_version!r} if name == 'verl' else _real(name)",
        ]
    lines += [
        "ray_started = lambda: 'ray' in sys.modules and sys.modules['ray'].is_initialized()",
        "atexit.register(lambda: print('RAY_STARTED' if ray_started() else 'NO_RAY', file=sys.stderr))",
        f"sys.argv = ['verl_dgpo.main', *{list(args)!r}]",
        "runpy.run_module('verl_dgpo.main', run_name='__main__')",
    ]
    return run_python("\n".join(lines))


def test_cfg_job_resolves_dgpo_with_n_2():
    """On an untested verl (verl's main branch) the entry point first prints its one note to stderr."""
    proc = run_entry("--cfg", "job", "--resolve", "algorithm.policy_loss=dgpo", "algorithm.dgpo.n=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("verl-dgpo: note: verl ")]
    assert notes == ([] if is_tested(VERL) else [f"verl-dgpo: note: {untested_note(VERL)}"])
    config = yaml.safe_load(proc.stdout)
    policy_loss = config["actor_rollout_ref"]["actor"]["policy_loss"]
    assert policy_loss["loss_mode"] == "dgpo"
    assert policy_loss["dgpo_n"] == 2 and config["algorithm"]["dgpo"]["n"] == 2


@pytest.mark.parametrize("fake", ["0.6.1", "0.7.0"])
def test_older_verl_is_refused_in_one_line_before_ray(fake):
    proc = run_entry("trainer.total_training_steps=1", fake_verl_version=fake)
    lines = [line for line in proc.stderr.splitlines() if line != "NO_RAY"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines == [lines[0]] and f"verl=={fake}" in lines[0] and ">=0.7.1" in lines[0]
    assert proc.stderr.splitlines()[-1] == "NO_RAY" and "Traceback" not in proc.stderr


def test_cpu_main_job_is_refused_in_one_line_where_its_patch_targets_are_missing():
    """0.7.1 and 0.8.0 lack the internals the CPU patches target: local_cpu gets one line naming one."""
    from verl_dgpo.local.patches import check_patch_targets

    problems = check_patch_targets()
    if not problems:
        pytest.skip(f"verl {VERL} has every CPU patch target (the CPU main job runs on it)")
    proc = run_entry("--config-name", "local_cpu")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("verl-dgpo: error:")]
    assert len(lines) == 1 and f"verl=={VERL}" in lines[0] and problems[0] in lines[0]
    assert proc.stderr.splitlines()[-1] == "NO_RAY" and "Traceback" not in proc.stderr
