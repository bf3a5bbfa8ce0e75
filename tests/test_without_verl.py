"""What runs without importing verl, in ONE fresh interpreter, in this order: the host-free maths (torch and
nothing of verl, Ray, TRL, hydra, omegaconf, transformers), verl's files found without its import, our TRL
host, the entry point's refusals of bad keys and its ``--cfg job`` print, and last the config folder, which
imports verl only when its class is asked for.

Each of these claims is about a first import: "after X, ``verl`` is not in ``sys.modules``". They share one
plain interpreter (tests/fresh_interpreter.py), run one after another, because every claim leaves the
interpreter as it found it in the one respect the next one tests: if a claim held, verl is still not imported
when the next starts (if one failed, it says so itself). Each claim is asserted on its own, with its own
message. The entry point runs as ``python -m verl_dgpo.main ARGS`` runs it (``runpy``), with the process's
file descriptors 1 and 2 caught per run, so "one line on stderr" counts whatever the run wrote, libraries'
C-level output included (what importing a library prints at its first import lands in the first run, which
imports the same modules as the others before refusing).
"""

import os

import pytest

import fresh_interpreter  # tests/fresh_interpreter.py
from fresh_interpreter import run_claims

MICRO = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"

PROBE = r'''
HOSTS = ("verl", "ray", "trl", "hydra", "omegaconf", "transformers")
for module in json.loads(sys.argv[1])["maths"]:
    @claim(module)
    def _(module=module):
        import importlib

        importlib.import_module(module)
        loaded = {m.split(".")[0] for m in sys.modules}
        return {"torch": "torch" in loaded, "hosts": sorted(loaded & set(HOSTS))}


@claim("verl_files")
def _():
    from verl_dgpo.verl_glue import verl_files as f

    return {"config_dir": f.config_dir(), "has_main_ppo": f.has_module("verl.trainer.main_ppo")}


@claim("trl host")
def _():
    import verl_dgpo.trl  # noqa: F401

    # Where a vLLM is installed TRL itself imports it (its trainer's weight-transfer classes) and vLLM imports Ray:
    # then only verl is ours to keep out, and Ray must have come in with vLLM.
    with_vllm = "vllm" in sys.modules
    return {"loaded": sorted(m for m in sys.modules if m.split(".")[0] == "verl" or (m.split(".")[0] == "ray" and not with_vllm))}


entry_runs(json.loads(sys.argv[1])["entry"])


@claim("config folder")
def _():
    import verl_dgpo.config as c

    before = "verl" in sys.modules
    c.DGPOPolicyLossConfig
    return {"before": before, "after": "verl" in sys.modules}
'''

#: The maths modules (docs/architecture.md's maths part): one maths serves every host (verl's registry, TRL's
#: trainer); a host import sneaking into it would make the TRL glue drag verl in, and would break the loss
#: benchmark's maths backend that runs where only torch is installed.
PURE_MODULES = [
    "verl_dgpo.maths.losses",
    "verl_dgpo.maths.baseline_losses",
    "verl_dgpo.maths.advantages",
    "verl_dgpo.maths.loss_metrics",
    "verl_dgpo.maths.hyperparameters",
]

#: claim -> the entry point's arguments; the refusals' expected first words, and the --cfg job print.
REFUSALS = {
    "dgpo.n": (["algorithm.dgpo.n=0", MICRO], "verl-dgpo: error: algorithm.dgpo.n=0 is not allowed"),
    "ce_gppo.beta1": (["algorithm.ce_gppo.beta1=-1", MICRO], "verl-dgpo: error: algorithm.ce_gppo.beta1=-1 is not allowed"),
    "clip_ratio_low": (["actor_rollout_ref.actor.clip_ratio_low=1.5", MICRO],
                       "verl-dgpo: error: actor_rollout_ref.actor.clip_ratio_low=1.5 is not allowed"),
    "local_cpu train_batch_size": (["--config-name", "local_cpu", "data.train_batch_size=0", "local_cpu.output_dir={out}"],
                                   "verl-dgpo: error: data.train_batch_size=0 is not allowed"),
    "watchdog.timeout_s": (["watchdog.timeout_s=-1", MICRO], "verl-dgpo: error: watchdog.timeout_s=-1 is not allowed"),
    "local_cpu watchdog.startup_timeout_s": (
        ["--config-name", "local_cpu", "watchdog.startup_timeout_s=soon", "local_cpu.output_dir=/nonexistent/never-written"],
        "verl-dgpo: error: watchdog.startup_timeout_s='soon' is not allowed"),
}  # fmt: skip
CFG_JOB = ["--cfg", "job", "--resolve", "algorithm.policy_loss=gppo"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """One fresh interpreter for every claim of this file."""
    out = tmp_path_factory.mktemp("local-cpu-output")
    runs = [[name, "verl_dgpo.main", [a.format(out=out) for a in args]] for name, (args, _) in REFUSALS.items()]
    runs.append(["cfg job", "verl_dgpo.main", CFG_JOB])
    return run_claims(PROBE, argument={"maths": PURE_MODULES, "entry": runs}), out


def claim(probe, name):
    return fresh_interpreter.claim(probe[0], name)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_maths_module_imports_no_host(probe, module):
    """(was tests/test_host_free_maths.py, one interpreter per module)"""
    result = claim(probe, module)
    assert result["torch"] or module == "verl_dgpo.maths.hyperparameters"
    assert result["hosts"] == [], f"{module} imports {result['hosts']}"


def test_lookup_runs_no_verl_code(probe):
    """(was tests/test_verl_files.py) verl's config folder and a module's presence, found without verl's code."""
    result = claim(probe, "verl_files")
    assert result["config_dir"] and result["has_main_ppo"] is True
    assert result["verl imported"] is False, "verl_files imported verl"


def test_trl_host_import_loads_neither_verl_nor_ray(probe):
    """(was tests/test_trl_config.py::test_import_loads_neither_verl_nor_ray)"""
    result = claim(probe, "trl host")
    assert result["loaded"] == [], f"import verl_dgpo.trl loaded {result['loaded']}"


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_keys_are_refused_in_one_line_before_verl_is_imported(probe, name):
    """(was tests/test_main_config.py, and for local_cpu also tests/test_preflight.py's
    test_zero_batch_size_with_the_local_preset_exits_before_ray) exit 2, one line on stderr, no traceback,
    verl never imported (so neither Ray nor verl's run_ppo), nothing written to the output folder."""
    result = claim(probe, name)
    line = REFUSALS[name][1]
    stderr = result["stderr"]
    assert result["status"] == 2, stderr[-2000:]
    assert stderr.strip().splitlines() == [stderr.strip()] and stderr.startswith(line), stderr[-2000:]
    assert "Traceback" not in stderr + result["stdout"]
    assert "ray init kwargs" not in result["stdout"] and "starting Ray" not in result["stdout"]
    assert result["verl imported"] is False, f"{name}: verl was imported before the refusal"
    if name == "local_cpu train_batch_size":
        _, out = probe
        assert not os.listdir(out), "the refused run wrote into local_cpu.output_dir"


def test_printing_the_resolved_config_imports_no_verl(probe):
    """(was tests/test_main_config.py)"""
    result = claim(probe, "cfg job")
    assert result["status"] == 0 and "loss_mode: gppo" in result["stdout"], result["stderr"][-2000:]
    assert result["verl imported"] is False, "--cfg job imported verl"


def test_the_config_folder_imports_no_verl_until_the_class_is_asked_for(probe):
    """(was tests/test_user_paths.py) last in the interpreter: asking for the class imports verl."""
    result = claim(probe, "config folder")
    assert (result["before"], result["after"]) == (False, True)
