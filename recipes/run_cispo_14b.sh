#!/usr/bin/env bash
# cispo on DeepSeek-R1-Distill-Qwen-14B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=cispo SIZE=14b exec bash "$(dirname "$0")/common.sh" "$@"
