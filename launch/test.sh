#!/usr/bin/env bash
# The test command: installs what it needs, then runs the whole suite.
# Extra arguments go to pytest (e.g. -m "not slow" to skip end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=bench bash launch/setup.sh  # the bench tests run the peers too
exec python -m pytest "$@"
