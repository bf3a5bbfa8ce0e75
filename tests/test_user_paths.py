"""Every path a user types still works after the package's modules moved (docs/architecture.md)."""

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
from hydra.utils import get_class

from test_checkpoints import write_step
from test_run_identity import start

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def test_pkg_reward_path_loads_the_math_reward_the_way_verl_does():
    from verl.utils.import_utils import load_module

    score = load_module("pkg://verl_dgpo.reward").compute_score
    assert score("math", r"so \boxed{42}", "42") == 1.0
    assert score("math", r"so \boxed{41}", "42") == 0.0


def test_pkg_config_search_path_holds_our_yaml_files():
    source = ImportlibResourcesConfigSource("pkg", "pkg://verl_dgpo.config")
    assert all(source.is_config(name) for name in ("dgpo", "dgpo_trainer", "local_cpu"))


def test_the_loss_config_target_resolves_to_a_verl_policy_loss_config():
    from verl.workers.config import PolicyLossConfig

    cls = get_class("verl_dgpo.config.DGPOPolicyLossConfig")
    assert issubclass(cls, PolicyLossConfig)
    assert {"dgpo_n", "dgpo_m"} <= set(cls.__dataclass_fields__)


# that the config folder imports no verl until its class is asked for: tests/test_without_verl.py


def test_the_plugin_module_verl_imports_registers_dgpo():
    from verl.trainer.ppo import core_algos

    registry = importlib.import_module("verl_dgpo.registry")
    assert core_algos.POLICY_LOSS_REGISTRY["dgpo"] is registry.REGISTERED_POLICY_LOSSES["dgpo"]
    assert core_algos.ADV_ESTIMATOR_REGISTRY["dgpo"] is registry.REGISTERED_ADV_ESTIMATORS["dgpo"]
    entry = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="verl.plugins")}
    assert entry.get("dgpo") == "verl_dgpo.registry"


def test_trl_host_and_console_scripts_resolve():
    from verl_dgpo.trl import DGPOConfig, DGPOTrainer  # noqa: F401

    scripts = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
    for name in ("verl-dgpo-train", "verl-dgpo-check"):
        assert callable(scripts[name].load()) and shutil.which(name), name


def test_the_module_entry_points_start():
    for module in ("verl_dgpo.eval", "verl_dgpo.check"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (module, proc.stderr[-500:])


def test_a_checkpoint_folder_written_before_the_layout_is_continued(tmp_path):
    """run_identity.json written by verl-dgpo 0.1.0 before the modules moved (tests/fixtures/): the same run
    after the move resumes from it, with no setting reported as different."""
    with open(os.path.join(FIXTURES, "run_identity_0.1.0_before_layout.json")) as f:
        recorded = json.load(f)
    model = [f"{k}={v}" for k, v in recorded["identity"].items() if k.startswith("local_cpu.model.")]
    ckpt = tmp_path / "checkpoints" / "dgpo"
    ckpt.mkdir(parents=True)
    shutil.copy(os.path.join(FIXTURES, "run_identity_0.1.0_before_layout.json"), ckpt / "run_identity.json")
    write_step(str(ckpt), 2)
    cfg, step, said = start(tmp_path, "trainer.resume_mode=auto", *model)
    assert step == 2 and cfg.trainer.resume_from_path == str(ckpt / "global_step_2"), said
