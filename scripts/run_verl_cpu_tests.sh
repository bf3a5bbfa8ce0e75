#!/usr/bin/env bash
# Run verl's own CPU tests for the policy-loss registry, loss aggregation and actor config against the
# installed verl, with verl-dgpo installed next to it: they must pass exactly as without us (the plugin
# only adds names to verl's registries; it patches nothing).
# The test files come from verl's source distribution on PyPI (the wheel ships no tests/trainer).
# Usage: bash scripts/run_verl_cpu_tests.sh [extra pytest args]
set -euo pipefail
VERL_VERSION=$(python -c "from verl_dgpo.version import VERL_VERSION; print(VERL_VERSION)")
WORK=${VERL_SDIST_DIR:-$(mktemp -d)}
if [ ! -d "$WORK/verl-$VERL_VERSION/tests" ]; then
  python -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "verl==$VERL_VERSION"
  tar -xzf "$WORK/verl-$VERL_VERSION.tar.gz" -C "$WORK"
fi
cd "$WORK/verl-$VERL_VERSION"
# check that our plugin is really loaded in the process that runs verl's tests
python -c "import verl; from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; assert 'dgpo' in R, 'plugin not loaded'"
python -m pytest -q -p no:cacheprovider \
  tests/trainer/ppo/test_core_algos_on_cpu.py \
  tests/trainer/ppo/test_loss_aggregation_on_cpu.py \
  tests/trainer/ppo/test_dynamic_policy_losses_on_cpu.py \
  tests/test_base_config_on_cpu.py \
  "$@"
