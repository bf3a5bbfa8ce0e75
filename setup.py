"""verl-dgpo: DGPO (arXiv 2603.14389) as a policy-loss plugin for verl."""

import ast
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _constants(path):
    """The module-level ``NAME = <literal>`` assignments of ``path`` (read, not imported)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return found


_versions = _constants(HERE / "verl_dgpo" / "version.py")
VERSION = _versions["__version__"]
SUPPORTED_VERL = _versions["SUPPORTED_VERL"]
# The oldest tested release and up (verl_dgpo/version.py), with no upper bound: pip keeps an admitted verl
# that is already installed (its default upgrade strategy is only-if-needed), so installing verl-dgpo never
# replaces the user's verl, newer ones included. A verl newer than the newest tested release is admitted
# at run time when every contract holds (`verl-dgpo-check`, verl_dgpo/verl_glue/contracts.py).
VERL_RANGE = f">={SUPPORTED_VERL[0]}"
# The TRL host (verl_dgpo.trl): its supported releases in verl_dgpo/trl/version.py, the same range as its
# supported_range(). The test extra pins TEST_TRL, the newest TRL next to which verl's trainer still starts.
_trl_versions = _constants(HERE / "verl_dgpo" / "trl" / "version.py")
_trl_major, _trl_minor = (int(part) for part in _trl_versions["SUPPORTED_TRL"][-1].split(".")[:2])
TRL_RANGE = f">={_trl_versions['SUPPORTED_TRL'][0]},<{_trl_major}.{_trl_minor + 1}"

setup(
    name="verl-dgpo",
    version=VERSION,
    description="DGPO (Decoupled Gradient Policy Optimization, arXiv 2603.14389) for verl",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["verl_dgpo", "verl_dgpo.*"]),
    package_data={"verl_dgpo": ["config/*.yaml", "eval/*.csv"]},
    python_requires=">=3.10",
    install_requires=[
        # verl, and what its trainers import beyond verl's own requirements (0.9.1 declares them in its
        # `verl-core` extra). Not through that extra: on verl's main branch (0.10.0.dev) it pulls
        # TransferQueue from a git URL, which pip cannot resolve from the package registry.
        f"verl{VERL_RANGE}",
        "TransferQueue>=0.1.10",  # the v1 trainer's data plane (0.9.0 imports it without declaring it)
        "pyzmq",
        "msgspec",
        "fastapi",  # 0.7.1-0.9.0 serve rollouts with fastapi/uvicorn
        "uvicorn",
        "cachetools",
        # math answer grading (verl_dgpo.reward); no extra: its antlr4 range admits hydra's 4.9.3.
        "math-verify>=0.9",
        # data preparation, evaluation, tables
        "pandas",
        "pyarrow",
        "tqdm",
        "matplotlib",
        # process tree and memory of the local CPU preset (verl_dgpo/local/progress.py, launch.py)
        "psutil",
    ],
    extras_require={
        # GPU inference back-end as verl pins it (vllm, and for 0.9.1 also torch and transformers), so it
        # cannot clash with verl; never needed on CPU or in the tests.
        "gpu": [f"verl[vllm]{VERL_RANGE}"],
        "trl": [f"trl{TRL_RANGE}"],
        "test": ["pytest>=8", "pytest-xdist>=3", "matplotlib", f"trl=={_trl_versions['TEST_TRL']}"],
    },
    entry_points={
        # `import verl` imports every module of this group in every process, Ray workers included.
        "verl.plugins": ["dgpo = verl_dgpo.registry"],
        # vLLM loads this group in each of its processes; ours does nothing unless the CPU preset asked for it
        # (VERL_DGPO_VLLM_CPU=1, set for its own runs) and vLLM runs on CPU (verl_dgpo/local/vllm_cpu.py).
        "vllm.general_plugins": ["verl_dgpo_cpu = verl_dgpo.local.vllm_cpu:register"],
        "console_scripts": ["verl-dgpo-train = verl_dgpo.main:main", "verl-dgpo-check = verl_dgpo.check:main"],
    },
)
