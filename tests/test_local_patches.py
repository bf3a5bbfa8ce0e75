"""The CPU patches of verl internals: guarded, effective, reversible, and never applied on import.

Each check that touches verl's global state runs in a fresh interpreter, so no test leaks a patch or a
registered platform into another.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, extra_env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (no local-preset env vars); it must print one JSON line last."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_patch_targets_match_the_installed_verl():
    """Fails loudly when verl's internals move: each patched function and source line must be where it was."""
    from verl_dgpo.local.patches import check_patch_targets

    assert check_patch_targets() == []


@pytest.mark.parametrize("target", ["process_group_backend", "engine_lookup", "pinned_memory"])
def test_moved_verl_code_is_reported_and_blocks_patching(monkeypatch, target):
    from dataclasses import replace

    from verl_dgpo.local import patches

    moved = replace(patches.TARGETS[target], expected_source="this line is not in verl")
    monkeypatch.setitem(patches.TARGETS, target, moved)
    problems = patches.check_patch_targets()
    assert len(problems) == 1 and problems[0].startswith(target + ":")
    with pytest.raises(patches.VerlInternalsChanged, match=target):
        patches.apply_patches()
    assert patches.applied_patches() == []


def test_a_caller_that_no_longer_calls_the_patched_function_is_reported(monkeypatch):
    from verl_dgpo.local import patches

    monkeypatch.setattr(patches, "PROCESS_GROUP_CALLERS", {"verl.workers.engine_workers": "gone_call()"})
    assert patches.check_patch_targets() == [
        "process_group_backend: verl.workers.engine_workers no longer calls 'gone_call()'"
    ]


def test_patches_are_gated_by_their_targets_not_by_the_version_string(monkeypatch):
    """Another version string with the same code: nothing to report. The same version with one target's
    source line changed: reported by name, and the patches refuse to apply."""
    import dataclasses

    import verl

    from verl_dgpo.local import patches

    monkeypatch.setattr(verl, "__version__", "0.10.0.dev")
    assert patches.check_patch_targets() == []
    moved = dataclasses.replace(patches.TARGETS["pinned_memory"], expected_source="offload_policy = Moved()")
    monkeypatch.setitem(patches.TARGETS, "pinned_memory", moved)
    problems = patches.check_patch_targets()
    assert len(problems) == 1 and problems[0].startswith("pinned_memory:") and "Moved()" in problems[0]
    with pytest.raises(patches.VerlInternalsChanged, match="pinned_memory"):
        patches.apply_patches()
    with pytest.raises(patches.VerlVersionError) as info:
        patches.require_cpu_preset("0.10.0.dev0")
    assert "\n" not in str(info.value) and "verl==0.10.0.dev0" in str(info.value) and "pinned_memory" in str(info.value)


@pytest.fixture(scope="module")
def import_then_patch():
    """One fresh interpreter: import verl (and callers that copy a patched function at their import), then every
    module of ours, and record what changed; only then apply the patches and remove them again."""
    return run_python(
        """
        import json, importlib, sys
        import verl  # loads the verl.plugins entry point (verl_dgpo.registry)
        import verl.utils.distributed as dist
        import verl.workers.engine.fsdp.transformer_impl as ti
        import verl.workers.engine_workers as ew  # copies initialize_global_process_group_ray at its import
        import verl.trainer.main_ppo_v0 as v0, verl.trainer.ppo.ray_trainer as rt
        from verl.workers.engine.base import EngineRegistry
        from verl.workers.rollout import base, replica
        from verl.plugin.platform.platform_manager import PlatformRegistry
        def watched():
            return (dist.initialize_global_process_group_ray, ew.initialize_global_process_group_ray,
                    EngineRegistry.__dict__["get_engine_cls"], ti.CPUOffloadPolicy, v0.RayPPOTrainer, rt.RayPPOTrainer)
        before = watched()
        for name in ["verl_dgpo", "verl_dgpo.registry", "verl_dgpo.main", "verl_dgpo.verl_glue.task_runners", "verl_dgpo.local",
                     "verl_dgpo.local.platform", "verl_dgpo.local.patches", "verl_dgpo.local.launch",
                     "verl_dgpo.local.progress", "verl_dgpo.local.task", "verl_dgpo.local.assets",
                     "verl_dgpo.local.hf_rollout"]:
            importlib.import_module(name)
        state = {
            "plugin_loaded": "verl_dgpo.registry" in sys.modules,
            "boot_loaded": "verl_dgpo.local.boot" in sys.modules,
            "same_objects": all(a is b for a, b in zip(before, watched())),
            "trainer_is_verls": v0.RayPPOTrainer is rt.RayPPOTrainer,
            "cpu_platform": PlatformRegistry.get("cpu") is not None,
            "hf_adapter": ("hf", "async") in base._ROLLOUT_REGISTRY,
            "hf_replica": "hf" in replica.RolloutReplicaRegistry._registry,
            "offload_pins": ti.CPUOffloadPolicy().pin_memory,
        }
        from verl_dgpo.local import patches
        state["applied"] = patches.applied_patches()
        original = ew.initialize_global_process_group_ray
        patches.apply_patches()
        state["caller_patched"] = ew.initialize_global_process_group_ray is dist.initialize_global_process_group_ray is not original
        patches.remove_patches()
        state["caller_restored"] = ew.initialize_global_process_group_ray is original
        print(json.dumps(state))
        """
    )


def test_importing_the_plugin_and_local_package_changes_nothing_in_verl(import_then_patch):
    """A GPU user who installs verl-dgpo gets verl's own behaviour: no patch, no platform, no rollout entry, and
    verl's own trainer class where verl's entry points look it up."""
    state = {k: v for k, v in import_then_patch.items() if not k.startswith("caller_")}
    assert state == {
        "plugin_loaded": True,
        "boot_loaded": False,
        "same_objects": True,
        "trainer_is_verls": True,
        "applied": [],
        "cpu_platform": False,
        "hf_adapter": False,
        "hf_replica": False,
        "offload_pins": True,
    }


def test_process_group_patch_reaches_a_caller_loaded_before_it(import_then_patch):
    """engine_workers copies the function at its import; a patch applied later must rebind that copy too."""
    assert import_then_patch["caller_patched"] is True and import_then_patch["caller_restored"] is True


def test_each_patch_removes_its_cpu_error_and_is_reversible():
    """Without the patches verl fails on CPU exactly as documented; with them each step passes; removal restores."""
    state = run_python(
        """
        import json, socket
        import verl
        import verl_dgpo.local.boot as boot  # registers platform cpu + rollout hf, applies the patches
        import torch, torch.distributed as td
        import verl.utils.distributed as dist
        import verl.workers.engine.fsdp.transformer_impl as ti
        from verl.workers.engine.base import EngineRegistry
        from verl.utils.device import get_device_name
        from verl_dgpo.local import patches

        out = {"device": get_device_name(), "applied": sorted(boot.PATCHES)}
        import verl.workers.engine_workers as ew  # imported after the patch: binds the wrapper
        out["caller_bound"] = ew.initialize_global_process_group_ray is dist.initialize_global_process_group_ray
        # 1. process group: the patched initializer builds a working gloo group on a CPU-only host
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        import os
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.initialize_global_process_group_ray()
        out["pg_backend"] = td.get_backend()
        t = torch.ones(3); td.all_reduce(t); out["all_reduce"] = t.tolist()
        td.destroy_process_group()
        # 2. engine lookup: the cpu device gets the cuda FSDP2 engine
        out["engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
        # 3. the offload policy never pins, and is still a CPUOffloadPolicy for FSDP2
        from torch.distributed.fsdp import CPUOffloadPolicy
        policy = ti.CPUOffloadPolicy(pin_memory=True)
        out["pin"] = policy.pin_memory; out["is_policy"] = isinstance(policy, CPUOffloadPolicy)

        patches.remove_patches()
        out["applied_after_remove"] = patches.applied_patches()
        try:
            EngineRegistry.get_engine_cls("language_model", "fsdp2"); out["engine_error"] = None
        except ValueError as e:
            out["engine_error"] = str(e)
        out["pin_after_remove"] = ti.CPUOffloadPolicy(pin_memory=True).pin_memory
        try:
            dist.initialize_global_process_group_ray(); out["pg_error"] = None
        except Exception as e:
            out["pg_error"] = str(e)
        print(json.dumps(out))
        """
    )
    assert state["device"] == "cpu" and state["caller_bound"] is True
    assert state["applied"] == ["engine_lookup", "pinned_memory", "process_group_backend"]
    assert state["pg_backend"] == "gloo" and state["all_reduce"] == [1.0, 1.0, 1.0]
    assert state["engine"] == "FSDPEngineWithLMHead"
    assert state["pin"] is False and state["is_policy"] is True
    assert state["applied_after_remove"] == []
    assert "No engine registered for device='cpu'" in state["engine_error"]
    assert state["pin_after_remove"] is True
    assert "Duplicate device type cpu" in state["pg_error"]


def test_torch_padding_helpers_of_the_verl_0_9_0_fallback_match_a_hand_computation():
    """verl 0.9.0 needs flash-attn for these; the CPU preset's torch versions, checked on a 2×3 mask."""
    import torch

    from verl_dgpo.local import patches

    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    hidden = torch.arange(6.0).reshape(2, 3, 1)  # token values 0..5 in row-major order
    rows, indices, cu_seqlens, max_len, used = patches._torch_unpad_input(hidden, mask)
    assert indices.tolist() == [0, 1, 4, 5]
    assert rows.flatten().tolist() == [0.0, 1.0, 4.0, 5.0]
    assert cu_seqlens.tolist() == [0, 2, 4] and max_len == 2 and used.tolist() == [2, 2]
    padded = patches._torch_pad_input(rows, indices, 2, 3)
    assert padded.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 4.0, 5.0]
    assert patches._torch_index_first_axis(hidden.reshape(6, 1), indices).flatten().tolist() == [0.0, 1.0, 4.0, 5.0]
