#!/usr/bin/env bash
# The test command: sets up the environment (launch/setup.sh, with the bench extra: the
# bench tests run the peers too), then runs the whole suite with that environment's Python,
# its bin/ first on PATH (the launch tests start its `deepspeed`).
# Extra arguments go to pytest (e.g. -m "not slow" to skip end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=bench bash launch/setup.sh
env_dir=${VIRTUAL_ENV:-${CONDA_PREFIX:-$PWD/.venv}}  # the one setup.sh used: the active one, else .venv
export PATH="$env_dir/bin:$PATH"
exec "$env_dir/bin/python" -m pytest "$@"
