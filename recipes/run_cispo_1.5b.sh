#!/usr/bin/env bash
# cispo on DeepSeek-R1-Distill-Qwen-1.5B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=cispo SIZE=1.5b exec bash "$(dirname "$0")/common.sh" "$@"
