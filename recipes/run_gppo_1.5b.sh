#!/usr/bin/env bash
# gppo on DeepSeek-R1-Distill-Qwen-1.5B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=gppo SIZE=1.5b exec bash "$(dirname "$0")/common.sh" "$@"
