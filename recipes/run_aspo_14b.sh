#!/usr/bin/env bash
# aspo on DeepSeek-R1-Distill-Qwen-14B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=aspo SIZE=14b exec bash "$(dirname "$0")/common.sh" "$@"
