#!/usr/bin/env bash
# Installs everything unimodal_free needs on a fresh Debian machine:
# OS packages (espeak-ng for the demo speech, libsndfile for soundfile, the
# Adwaita icon theme for the icon corpus and its test),
# then the package itself with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
need=""
command -v espeak-ng >/dev/null || need="$need espeak-ng"
ldconfig -p 2>/dev/null | grep -q libsndfile || need="$need libsndfile1"
[ -d /usr/share/icons/Adwaita/48x48 ] || need="$need adwaita-icon-theme"
if [ -n "$need" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi
python -m pip install -q --disable-pip-version-check -e ".[dev${EXTRAS:+,$EXTRAS}]"
