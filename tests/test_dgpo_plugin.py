"""The plugin as verl sees it: entry-point loading, verl's own loss path, registry hygiene."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from verl.trainer.ppo import core_algos
from verl.workers.utils.losses import ppo_loss

import verl_dgpo
from verl_dgpo import reference
from verl_dgpo.verl_glue import registration

from verl_dgpo.verl_glue.contracts import engine_batch


VERL_CONFIG_DIR = os.path.join(os.path.dirname(core_algos.__file__), "..", "config")


def clean_env():
    env = dict(os.environ)
    for key in ("VERL_USE_EXTERNAL_MODULES", "VERL_USE_EXTERNAL_PLUGINS"):
        env.pop(key, None)
    return env


def run_python(code, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env or clean_env(), timeout=300
    )


@pytest.mark.parametrize(
    "first_import",
    ["from verl_dgpo.config import DGPOPolicyLossConfig", "import verl_dgpo.registry", "import verl_dgpo.main"],
)
def test_registration_survives_any_first_import(first_import):
    """verl imports the plugin during ``import verl``; whichever of our modules a user imports first,
    the import cycle must not make that registration fail (verl would only log it at DEBUG level)."""
    proc = run_python(
        f"""
        {first_import}
        from verl.trainer.ppo.core_algos import get_policy_loss_fn
        print(get_policy_loss_fn("dgpo").__module__)  # before anything of ours imports the registry itself
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "verl_dgpo.verl_glue.registration"


def test_check_installed_raises_when_plugins_are_disabled():
    env = clean_env()
    env["VERL_USE_EXTERNAL_PLUGINS"] = "none"
    proc = run_python(
        """
        import verl_dgpo
        try:
            verl_dgpo.check_installed()
        except verl_dgpo.PluginNotInstalledError as err:
            print("LOUD:", err)
        """,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOUD:" in proc.stdout and "VERL_USE_EXTERNAL_PLUGINS" in proc.stdout


def test_check_installed_passes_here():
    verl_dgpo.check_installed()


def test_foreign_registration_under_our_name_is_refused(monkeypatch):
    def other_loss(*args, **kwargs):
        raise AssertionError("never called")

    monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, "dgpo", other_loss)
    with pytest.raises(verl_dgpo.PluginNotInstalledError, match="dgpo"):
        verl_dgpo.check_installed()
    with pytest.raises(registration.RegistryCollisionError, match="already registered"):
        registration.register_policy_loss("dgpo")(registration.compute_policy_loss_dgpo)


def compose_verl_actor_config(overrides):
    """verl's own hydra defaults (ppo_trainer.yaml) + overrides → the dataclass verl's workers build."""
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    with initialize_config_dir(config_dir=os.path.abspath(VERL_CONFIG_DIR), version_base=None):
        cfg = compose("ppo_trainer", overrides=["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", *overrides])
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def padded_batch(prompt_len, response_lengths, response_width, seed):
    """A TensorDict in the layout verl's engine hands ``ppo_loss``, plus the flat (unpadded) log-prob leaf."""
    g = torch.Generator().manual_seed(seed)
    bsz = len(response_lengths)
    response_mask = torch.tensor([[t < n for t in range(response_width)] for n in response_lengths])
    old = torch.randn(bsz, response_width, generator=g, dtype=torch.float64) - 2.0
    log_ratio = (torch.rand(bsz, response_width, generator=g, dtype=torch.float64) - 0.5) * 2.0
    adv = torch.randn(bsz, response_width, generator=g, dtype=torch.float64)
    data, flat_log_probs, positions = engine_batch(prompt_len, response_mask, old, log_ratio, adv)
    return data, flat_log_probs, positions, log_ratio, adv, response_mask


@pytest.mark.parametrize(
    "overrides,n,m",
    [
        (["actor_rollout_ref.actor.policy_loss.loss_mode=dgpo"], 1.0, 2.0),
        (
            [
                "actor_rollout_ref.actor.policy_loss.loss_mode=dgpo",
                "actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig",
                "+actor_rollout_ref.actor.policy_loss.dgpo_n=2",
                "+actor_rollout_ref.actor.policy_loss.dgpo_m=1.5",
                "actor_rollout_ref.actor.clip_ratio_high=0.28",
            ],
            2.0,
            1.5,
        ),
    ],
)
def test_verl_ppo_loss_path_gives_the_closed_form_gradient_and_updates_weights(overrides, n, m):
    config = compose_verl_actor_config(overrides)
    assert config.policy_loss.loss_mode == "dgpo"
    eps_low, eps_high = config.clip_ratio_low, config.clip_ratio_high
    data, flat, positions, log_ratio, adv, mask = padded_batch(3, [4, 2, 5], 5, seed=0)

    # a real (tiny) update: the flat log-probs are a parameter that an optimizer steps
    optim = torch.optim.SGD([flat], lr=0.1)
    before = flat.detach().clone()
    loss, metrics = ppo_loss(config, {"log_probs": flat}, data)
    loss.backward()

    num_tokens = int(mask.sum())
    for i, row in enumerate(positions):
        for t, pos in enumerate(row):
            r, a = math.exp(log_ratio[i, t].item()), adv[i, t].item()
            w = reference.weight("dgpo", r, a, eps_low=eps_low, eps_high=eps_high, n=n, m=m)
            assert flat.grad[pos].item() == pytest.approx(-a * w / num_tokens, rel=1e-6)
    response_positions = {p for row in positions for p in row}
    assert all(flat.grad[p].item() == 0.0 for p in range(flat.numel()) if p not in response_positions)
    optim.step()
    assert not torch.equal(flat.detach(), before)
    assert "actor/dgpo_ln_frac" in metrics and "actor/pg_loss" in metrics
