"""verl-dgpo: DGPO (arXiv 2603.14389) as a policy-loss plugin for verl."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
_version_src = (HERE / "verl_dgpo" / "version.py").read_text()
VERSION = re.search(r'^__version__ = "([^"]+)"', _version_src, re.M).group(1)
VERL_VERSION = re.search(r'^VERL_VERSION = "([^"]+)"', _version_src, re.M).group(1)

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
        f"verl=={VERL_VERSION}",
        # verl's default (v1) trainer needs TransferQueue (verl's own `verl-core` extra pins it so).
        "TransferQueue>=0.1.10",
        # verl imports these at run time but does not declare them.
        "fastapi",
        "uvicorn",
        "cachetools",
        # math answer grading (verl_dgpo.reward); no extra: its antlr4 range admits hydra's 4.9.3.
        "math-verify>=0.9",
        # data preparation, evaluation, tables
        "pandas",
        "pyarrow",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # GPU-only inference back-ends; never needed on CPU or in the tests.
        "gpu": ["vllm", "flash-attn"],
        "test": ["pytest>=8", "matplotlib"],
    },
    entry_points={
        # `import verl` imports every module of this group in every process, Ray workers included.
        "verl.plugins": ["dgpo = verl_dgpo.registry"],
        "console_scripts": ["verl-dgpo-train = verl_dgpo.main:main"],
    },
)
