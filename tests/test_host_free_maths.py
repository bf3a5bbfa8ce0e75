"""The maths modules are host-free: importing them loads torch and nothing of verl, Ray, TRL or hydra.

One maths serves every host (verl's registry, TRL's trainer); a host import sneaking into it would make
the TRL glue drag verl in, and would break the GPU check that runs where only torch is installed.
"""

import json
import subprocess
import sys

import pytest

PURE_MODULES = [
    "verl_dgpo.maths.losses",
    "verl_dgpo.maths.baseline_losses",
    "verl_dgpo.maths.advantages",
    "verl_dgpo.maths.loss_metrics",
    "verl_dgpo.maths.hyperparameters",
]
HOSTS = ("verl", "ray", "trl", "hydra", "omegaconf", "transformers")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_maths_module_imports_no_host(module):
    code = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "torch" in loaded or module == "verl_dgpo.maths.hyperparameters"
    assert not loaded & set(HOSTS), f"{module} imports {sorted(loaded & set(HOSTS))}"
