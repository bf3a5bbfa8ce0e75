#!/usr/bin/env bash
# grpo on DeepSeek-R1-Distill-Qwen-7B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=grpo SIZE=7b exec bash "$(dirname "$0")/common.sh" "$@"
