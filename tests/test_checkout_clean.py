"""What a documented command writes into the checkout is ignored by git (the checkout stays clean)."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documented_default(pattern, path):
    with open(os.path.join(ROOT, path)) as f:
        return re.search(pattern, f.read()).group(1)


@pytest.mark.parametrize(
    "folder",
    [
        # TOY=1 from the checkout's root: recipes/common.sh's default TOY_DIR ($PWD/toy)
        documented_default(r"TOY_DIR:-\$PWD/([\w.-]+)\}", "recipes/common.sh"),
        # python -m verl_dgpo.main --config-name local_cpu: the preset's output_dir (./dgpo_local_cpu)
        documented_default(r"\n  output_dir: ([\w.-]+)\n", "verl_dgpo/config/local_cpu.yaml"),
        "outputs",  # hydra's run folders (outputs/<date>/<time>) of any python -m verl_dgpo.main
    ],
)
def test_a_documented_output_folder_is_ignored(folder):
    probe = f"{folder}/some/file.json"
    assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 0, probe
