#!/usr/bin/env bash
# aspo on DeepSeek-R1-Distill-Qwen-1.5B; settings in recipes/common.sh, overridable by env var or hydra args.
set -euo pipefail
METHOD=aspo SIZE=1.5b exec bash "$(dirname "$0")/common.sh" "$@"
