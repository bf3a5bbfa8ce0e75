"""Run identity: a checkpoint folder is resumed or overwritten only by the run that wrote it."""

import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl_dgpo
import verl_dgpo.main  # noqa: F401  (registers the dgpo_loss_mode resolver)
from test_checkpoints import cut, write_step
from verl_dgpo.startup import run_identity
from verl_dgpo.startup.run_identity import RunIdentityError, guard

CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def local_config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="local_cpu", overrides=[f"local_cpu.output_dir={tmp_path}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def start(tmp_path, *overrides):
    """What a run does before Ray: return (config as handed to verl, step resumed from, printed lines)."""
    cfg = local_config(tmp_path, *overrides)
    said = []
    step = guard(cfg, say=said.append)
    return cfg, step, said


def test_identity_names_each_key_as_typed_and_both_versions(tmp_path):
    identity = run_identity.identity_of(local_config(tmp_path, "algorithm.dgpo.n=2"))
    assert identity["algorithm.policy_loss"] == "dgpo"
    assert identity["actor_rollout_ref.actor.policy_loss.loss_mode"] == "dgpo"
    assert identity["algorithm.dgpo.n"] == 2 and identity["algorithm.dgpo.m"] == 2
    assert identity["actor_rollout_ref.actor.clip_ratio_low"] == 0.2
    assert identity["local_cpu.task.alphabet"] == "7" and identity["local_cpu.seed"] == 0
    assert identity["version.verl"] == "0.9.1" and identity["version.verl_dgpo"] == verl_dgpo.__version__
    assert not any("total_training_steps" in k or "save_freq" in k for k in identity)


def test_each_method_gets_its_own_checkpoint_folder(tmp_path):
    assert local_config(tmp_path).trainer.default_local_dir == f"{tmp_path}/checkpoints/dgpo"
    assert local_config(tmp_path, "algorithm.policy_loss=grpo").trainer.default_local_dir == f"{tmp_path}/checkpoints/grpo"


def test_a_fresh_run_records_its_identity(tmp_path):
    cfg, step, said = start(tmp_path)
    assert step is None and cfg.trainer.resume_mode == "disable"
    with open(os.path.join(cfg.trainer.default_local_dir, "run_identity.json")) as f:
        assert json.load(f)["identity"] == run_identity.identity_of(cfg)


def test_resume_takes_the_latest_complete_checkpoint_and_says_which(tmp_path):
    cfg, _, _ = start(tmp_path)
    ckpt = cfg.trainer.default_local_dir
    write_step(ckpt, 3)
    write_step(ckpt, 6)
    cut(os.path.join(ckpt, "global_step_6", "data.pt"))  # killed while writing step 6
    cfg, step, said = start(tmp_path, "trainer.resume_mode=auto", "trainer.total_training_steps=40")
    assert step == 3
    assert cfg.trainer.resume_mode == "resume_path"
    assert cfg.trainer.resume_from_path == os.path.join(ckpt, "global_step_3")
    assert "resuming from checkpoint step 3" in said[-1] and "continues at step 4" in said[-1]
    assert "says step 6" in said[-1]


def test_resume_of_another_method_or_parameter_is_one_line_naming_the_keys(tmp_path):
    cfg, _, _ = start(tmp_path)
    write_step(cfg.trainer.default_local_dir, 10)
    with pytest.raises(RunIdentityError) as err:
        # the same folder, given explicitly, with another n and another seed
        start(tmp_path, "trainer.resume_mode=auto", "algorithm.dgpo.n=2", "local_cpu.seed=1")
    message = str(err.value)
    assert "\n" not in message
    assert 'algorithm.dgpo.n 1 → 2' in message and 'local_cpu.seed 0 → 1' in message
    assert "local_cpu.output_dir" in message and "run_identity.allow_mismatch=true" in message
    assert "total_training_steps" not in message


def test_resume_path_into_another_methods_folder_is_refused(tmp_path):
    cfg, _, _ = start(tmp_path, "algorithm.policy_loss=grpo")
    folder = write_step(cfg.trainer.default_local_dir, 3)
    with pytest.raises(RunIdentityError, match='algorithm.policy_loss "grpo" → "dgpo"'):
        start(tmp_path, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={folder}")


def test_allow_mismatch_continues_and_keeps_the_old_identity(tmp_path):
    cfg, _, _ = start(tmp_path)
    ckpt = cfg.trainer.default_local_dir
    write_step(ckpt, 2)
    old = run_identity.read_identity(ckpt)["identity"]
    cfg, step, _ = start(tmp_path, "trainer.resume_mode=auto", "algorithm.dgpo.m=3", "run_identity.allow_mismatch=true")
    assert step == 2
    record = run_identity.read_identity(ckpt)
    assert record["identity"]["algorithm.dgpo.m"] == 3 and record["earlier"] == [old]


def test_a_fresh_run_never_overwrites_another_runs_checkpoints(tmp_path):
    cfg, _, _ = start(tmp_path)
    write_step(cfg.trainer.default_local_dir, 10)
    with pytest.raises(RunIdentityError, match="different run: algorithm.dgpo.n 1 → 3; this run would overwrite them"):
        start(tmp_path, "algorithm.dgpo.n=3")
    # the same run started over there is allowed, and told what happens
    _, step, said = start(tmp_path, "trainer.total_training_steps=3")
    assert step is None and "same run" in said[0] and "resume_mode=auto" in said[0]


def test_checkpoints_without_an_identity_are_not_taken_for_this_run(tmp_path):
    ckpt = local_config(tmp_path).trainer.default_local_dir
    write_step(ckpt, 5)  # e.g. written by verl's own main_ppo
    for mode in ("auto", "disable"):
        with pytest.raises(RunIdentityError, match="no run_identity.json"):
            start(tmp_path, f"trainer.resume_mode={mode}")
    _, step, _ = start(tmp_path, "trainer.resume_mode=auto", "run_identity.allow_mismatch=true")
    assert step == 5


def test_resume_past_the_last_step_or_from_an_incomplete_folder_is_refused(tmp_path):
    cfg, _, _ = start(tmp_path)
    ckpt = cfg.trainer.default_local_dir
    write_step(ckpt, 30)
    with pytest.raises(RunIdentityError, match="step 30.*trainer.total_training_steps=30"):
        start(tmp_path, "trainer.resume_mode=auto")
    assert start(tmp_path, "trainer.resume_mode=auto", "trainer.total_training_steps=40")[1] == 30
    broken = write_step(ckpt, 35, data=False)
    with pytest.raises(RunIdentityError, match="trainer.resume_from_path=.*incomplete"):
        start(tmp_path, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={broken}",
              "trainer.total_training_steps=40")


def test_a_run_without_checkpoints_touches_nothing(tmp_path):
    cfg, step, _ = start(tmp_path, "trainer.save_freq=-1")
    assert step is None and not os.path.exists(cfg.trainer.default_local_dir)


def test_the_entry_point_refuses_a_mismatched_resume_before_ray_with_exit_2(tmp_path):
    cfg, _, _ = start(tmp_path)
    write_step(cfg.trainer.default_local_dir, 10)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={tmp_path}",
         "trainer.resume_mode=auto", "algorithm.dgpo.n=2", "trainer.total_training_steps=40"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("verl-dgpo: error:") and "algorithm.dgpo.n 1 → 2" in lines[0], proc.stderr
    assert "starting Ray" not in proc.stdout and "Traceback" not in proc.stderr


def test_the_readme_examples_in_order_in_one_folder_never_continue_another_methods_run(tmp_path):
    """The set-up examples of verl_dgpo/local/README.md, each started in the same folder; a run's checkpoints
    are put where verl would."""
    # 1. the default run: 30 steps, checkpoints every 10 (verl's max_actor_ckpt_to_keep=2 strips step 10)
    cfg, step, _ = start(tmp_path)
    assert step is None
    dgpo_dir = cfg.trainer.default_local_dir
    write_step(dgpo_dir, 10, actor=False)
    write_step(dgpo_dir, 20)
    write_step(dgpo_dir, 30)
    # 2. trainer.total_training_steps=3: the same run started over (the last step is saved)
    cfg, step, said = start(tmp_path, "trainer.total_training_steps=3")
    assert step is None and "same run" in said[0]
    write_step(dgpo_dir, 3)
    # 3. algorithm.policy_loss=grpo: its own folder, nothing of DGPO's touched
    cfg, step, _ = start(tmp_path, "algorithm.policy_loss=grpo")
    assert step is None and cfg.trainer.default_local_dir != dgpo_dir
    write_step(cfg.trainer.default_local_dir, 3)
    # 4. trainer.resume_mode=auto trainer.total_training_steps=40: continues DGPO from its latest complete step
    cfg, step, said = start(tmp_path, "trainer.resume_mode=auto", "trainer.total_training_steps=40")
    assert step == 30 and cfg.trainer.resume_from_path == os.path.join(dgpo_dir, "global_step_30")
    assert run_identity.read_identity(dgpo_dir)["identity"]["algorithm.policy_loss"] == "dgpo"


def test_verls_default_auto_resume_without_saves_writes_nothing(tmp_path):
    cfg, step, said = start(tmp_path, "trainer.resume_mode=auto", "trainer.save_freq=-1")
    assert step is None and "training from step 1" in said[0]
    assert not os.path.exists(cfg.trainer.default_local_dir)
