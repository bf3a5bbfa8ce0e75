#!/usr/bin/env bash
# Check verl-dgpo against one verl release in a venv of its own:
#   bash scripts/check_verl_release.sh 0.8.0                                   # a release from the registry
#   bash scripts/check_verl_release.sh --wheel ../shared/verl-next/verl-0.10.0.dev0-py3-none-any.whl
#                                                         # a wheel checked as a release (verl's main branch)
# 1. installs that release first, as its user would have it, then `pip install -e .`, and fails unless
#    verl is still that release afterwards;
# 2. runs `verl-dgpo-check` (every contract, real calls: verl_dgpo/verl_glue/contracts.py: the losses through
#    verl's registry and its actor call sites against verl_dgpo/reference.py's closed forms, the estimator,
#    the Pass@k hooks, the CPU preset's targets, registration in a fresh process) and fails unless it exits 0;
# 3. runs what the check does not cover: tests/release (whether the release is a tested one, what
#    check_installed answers per mechanism, `--cfg job` and, on an untested verl, the entry point's one note,
#    the version gate's one-line refusals) and the recipe dry-runs (tests/test_recipes.py);
# 4. for a registry release: swaps in verl 0.6.1 (older than the oldest tested) and fails unless
#    `python -m verl_dgpo.main` refuses it with one line and exit status 2, then restores the release;
# 5. where the CPU preset's patch targets are found unchanged (verl_dgpo.local.patches.check_patch_targets),
#    runs the CPU main job: 3 steps of verl's real trainer, `python -m verl_dgpo.main --config-name
#    local_cpu` (SKIP_MAIN_JOB=1 skips it). Elsewhere tests/release has checked its one-line refusal.
# The venv (--system-site-packages, so it reuses the installed torch) is kept under $VERL_RELEASE_VENVS
# (default /tmp/verl-dgpo-releases) and reused by the next run. .ci/run calls this for every release in
# verl_dgpo/version.py's SUPPORTED_VERL other than the one installed in the main environment, and for
# the wheel of verl's main branch.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL=
if [ "${1:-}" = --wheel ]; then
  WHEEL=$(realpath "${2:?usage: bash scripts/check_verl_release.sh --wheel PATH}")
  VERSION=$(basename "$WHEEL" | cut -d- -f2)  # verl-0.10.0.dev0-py3-none-any.whl -> 0.10.0.dev0
else
  VERSION=${1:?usage: bash scripts/check_verl_release.sh VERSION | --wheel PATH}
fi
VENV=${VERL_RELEASE_VENVS:-/tmp/verl-dgpo-releases}/verl-$VERSION
START=$SECONDS
say() { echo "check_verl_release $VERSION: $*"; }

[ -x "$VENV/bin/python" ] || python -m venv --system-site-packages "$VENV"
PY=$VENV/bin/python
# verl 0.7.x and 0.8.x pin numpy<2, and pyarrow>=25 does not import with numpy 1 (it declares no numpy
# requirement, so pip cannot see the clash): those releases need an older pyarrow next to them.
case $VERSION in
  0.7.*|0.8.*) EXTRA=("pyarrow<25") ;;
  *) EXTRA=() ;;
esac
# Two checks may run at once (.ci/run): `pip install -e .` writes verl_dgpo.egg-info into the checkout, so
# installs take turns (flock, util-linux).
PIP_LOCK=${TMPDIR:-/tmp}/verl-dgpo-pip.lock
locked() { if command -v flock >/dev/null; then flock "$PIP_LOCK" "$@"; else "$@"; fi; }
locked "$PY" -m pip install -q "${WHEEL:-verl==$VERSION}" "${EXTRA[@]}"
locked "$PY" -m pip install -q -e .
INSTALLED=$("$PY" -c 'import importlib.metadata as m; print(m.version("verl"))')
if [ "$INSTALLED" != "$VERSION" ]; then
  say "FAIL: pip install -e . replaced verl $VERSION by $INSTALLED"
  exit 1
fi
say "pip install -e . kept verl $VERSION ($((SECONDS - START)) s)"

clean() { env -u VERL_USE_EXTERNAL_MODULES -u VERL_USE_EXTERNAL_PLUGINS PATH="$VENV/bin:$PATH" PYTHONPATH="$PWD" "$@"; }
T=$SECONDS
if ! clean "$VENV/bin/verl-dgpo-check" 2>/dev/null; then
  say "FAIL: verl-dgpo-check found a broken contract (rows above)"
  exit 1
fi
say "verl-dgpo-check: every contract holds ($((SECONDS - T)) s)"

# One pytest for both (each pytest's workers import verl to collect), two workers (not pytest.ini's three):
# .ci/run runs two of these checks at once on its two cores.
T=$SECONDS
clean "$PY" -m pytest -q -p no:cacheprovider -n 2 tests/release tests/test_recipes.py
say "tests/release and tests/test_recipes.py passed ($((SECONDS - T)) s)"

if [ -z "$WHEEL" ]; then
  # Older than the oldest tested release: one line, exit status 2, before hydra or Ray.
  locked "$PY" -m pip install -q --no-deps "verl==0.6.1"
  set +e
  REFUSAL=$(cd / && env -u VERL_USE_EXTERNAL_MODULES PYTHONPATH="$OLDPWD" "$PY" -m verl_dgpo.main 2>&1)
  STATUS=$?
  set -e
  locked "$PY" -m pip install -q --no-deps "verl==$VERSION"
  if [ "$STATUS" != 2 ] || [ "$(printf '%s\n' "$REFUSAL" | wc -l)" != 1 ] || [[ $REFUSAL != *"verl==0.6.1"* ]]; then
    say "FAIL: verl 0.6.1 was not refused with one line and status 2 (status $STATUS):"
    printf '%s\n' "$REFUSAL"
    exit 1
  fi
  say "verl 0.6.1 refused: $REFUSAL"
fi
MAIN_JOB=$(clean "$PY" -c "from verl_dgpo.local.patches import check_patch_targets; print(not check_patch_targets())" 2>/dev/null)
if [ "$MAIN_JOB" = True ] && [ "${SKIP_MAIN_JOB:-0}" != 1 ]; then
  T=$SECONDS
  OUT=$(mktemp -d)
  (cd "$OUT" && env -u VERL_USE_EXTERNAL_MODULES PYTHONPATH="$OLDPWD" \
    "$PY" -m verl_dgpo.main --config-name local_cpu trainer.total_training_steps=3 local_cpu.output_dir="$OUT")
  rm -rf "$OUT"
  say "CPU main job ran 3 steps ($((SECONDS - T)) s)"
elif [ "$MAIN_JOB" != True ]; then
  say "CPU main job not offered: the CPU preset's patch targets are not all in verl $VERSION"
fi
say "OK in $((SECONDS - START)) s"
