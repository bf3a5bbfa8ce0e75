#!/usr/bin/env bash
# Check verl_dgpo.trl against one TRL release in a venv of its own:
#   bash scripts/check_trl_release.sh 1.16.0
# 1. installs that TRL (the venv uses --system-site-packages, so torch, transformers, verl come from the
#    main environment) and fails if that changed any other package the main environment has;
# 2. runs the TRL tests there (tests/test_trl_config.py, tests/test_trl_trainer.py: DGPOTrainer against
#    GRPOTrainer at r = 1, and the closed-form gradients);
# 3. on a TRL without the value-head model verl imports (1.13 and later), fails unless
#    `python -m verl_dgpo.main --config-name local_cpu` refuses with one line naming that TRL and exit 2,
#    before Ray (verl_dgpo/startup/trl_compat.py).
# .ci/run calls it for every release in verl_dgpo/trl/version.py's SUPPORTED_TRL other than TEST_TRL
# (the one the main environment's test extra installs). The venv is kept under $TRL_RELEASE_VENVS
# (default /tmp) as trl-MAJOR.MINOR and reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:?usage: bash scripts/check_trl_release.sh VERSION}
VENV=${TRL_RELEASE_VENVS:-/tmp}/trl-${VERSION%.*}
START=$SECONDS
say() { echo "check_trl_release $VERSION: $*"; }

[ -x "$VENV/bin/python" ] || python -m venv --system-site-packages "$VENV"
PY=$VENV/bin/python
BEFORE=$(python -m pip freeze --exclude-editable | grep -iv '^trl==' | sort)
"$PY" -m pip install -q "trl==$VERSION"
AFTER=$("$PY" -m pip freeze --exclude-editable | grep -iv '^trl==' | sort)
if [ "$BEFORE" != "$AFTER" ]; then
  say "FAIL: installing trl==$VERSION changed other packages:"
  diff <(echo "$BEFORE") <(echo "$AFTER") || true
  exit 1
fi
say "trl $("$PY" -c 'import importlib.metadata as m; print(m.version("trl"))') installed, nothing else changed ($((SECONDS - START)) s)"

T=$SECONDS
env PATH="$VENV/bin:$PATH" PYTHONPATH="$PWD" "$PY" -m pytest -q -p no:cacheprovider -n 2 \
  tests/test_trl_config.py tests/test_trl_trainer.py
say "TRL tests passed ($((SECONDS - T)) s)"

if PYTHONPATH="$PWD" "$PY" -c 'import sys; from verl_dgpo.startup.trl_compat import check_verl_can_import_trl as c; c()' 2>/dev/null; then
  say "this TRL has the value-head model verl imports: no refusal to check"
  exit 0
fi
T=$SECONDS
set +e
REFUSAL=$(cd / && env -u VERL_USE_EXTERNAL_MODULES PYTHONPATH="$OLDPWD" timeout 300 "$PY" -m verl_dgpo.main --config-name local_cpu 2>&1)
STATUS=$?
set -e
if [ "$STATUS" != 2 ] || [ "$(printf '%s\n' "$REFUSAL" | wc -l)" != 1 ] || [[ $REFUSAL != *"trl==$VERSION"* ]]; then
  say "FAIL: verl's trainer next to trl $VERSION was not refused with one line and status 2 (status $STATUS):"
  printf '%s\n' "$REFUSAL"
  exit 1
fi
say "python -m verl_dgpo.main --config-name local_cpu refused in one line, exit 2, $((SECONDS - T)) s: $REFUSAL"
say "passed ($((SECONDS - START)) s)"
