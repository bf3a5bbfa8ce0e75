#!/usr/bin/env bash
# The embedded default on CPU: a tiny Qwen2 made in code, a synthetic task, verl's real Ray trainer.
#   bash examples/dgpo_trainer/run_tiny_cpu.sh [hydra overrides, e.g. trainer.total_training_steps=3]
set -euo pipefail
exec python -m verl_dgpo.main --config-name local_cpu "$@"
