#!/usr/bin/env bash
# Sets up unimodal_free: a Python environment holding the package (editable) with its
# test extra, plus the OS packages the demo data and the icon corpus use, where it may.
#
#   bash launch/setup.sh [--torch cuda|cpu] [--print-plan]
#
# Environment: the active virtual environment (VIRTUAL_ENV) or conda environment
#   (CONDA_PREFIX) if there is one, else ./.venv, created with `$PYTHON -m venv`
#   (PYTHON defaults to python3; isolated, no system site-packages). With an active
#   environment, ./.venv becomes a link to it, so `. .venv/bin/activate` works either way
#   (conda environments have no bin/activate: they are active already).
# Torch (--torch, or TORCH=): cuda (default) installs PyPI's wheel (the CUDA build on
#   Linux x86_64); cpu installs the CPU-only wheel from https://download.pytorch.org/whl/cpu
#   (or from the mirror in TORCH_CPU_INDEX).
# OS packages, optional: espeak-ng (speaks the demo's captions), adwaita-icon-theme
#   (the icon corpus), chromium and chromium-driver (the explorer's browser test), through
#   apt-get when root or passwordless sudo; otherwise, or when apt-get fails, one note per
#   missing package says what is lost.
# EXTRAS=bench adds the benchmark extra. --print-plan prints what would be done and exits.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}  # a mirror of it may be set instead

die() { echo "error: $*" >&2; exit 1; }

torch=${TORCH:-cuda}
plan_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --torch) [ $# -ge 2 ] || die "--torch needs a value: cuda or cpu"; torch=$2; shift 2 ;;
    --torch=*) torch=${1#--torch=}; shift ;;
    --print-plan) plan_only=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (usage: bash launch/setup.sh [--torch cuda|cpu] [--print-plan])" ;;
  esac
done
case $torch in
  cuda) torch_from="PyPI's wheel (the CUDA build on Linux x86_64)" ;;
  cpu) torch_from="the CPU-only wheel from $CPU_INDEX" ;;
  *) die "--torch/TORCH: '$torch' is not cuda or cpu" ;;
esac
extras="dev${EXTRAS:+,$EXTRAS}"

# ---------------------------------------------------------------- which Python environment
if [ -n "${VIRTUAL_ENV:-}" ]; then
  env_dir=$VIRTUAL_ENV; env_kind="the active virtual environment"
elif [ -n "${CONDA_PREFIX:-}" ]; then
  env_dir=$CONDA_PREFIX; env_kind="the active conda environment"
else
  env_dir=$ROOT/.venv; env_kind=""
fi
if [ -n "$env_kind" ]; then
  [ -x "$env_dir/bin/python" ] || die "$env_kind $env_dir has no bin/python: deactivate it or repair it"
  base_python=$env_dir/bin/python
elif [ -x "$env_dir/bin/python" ]; then
  base_python=$env_dir/bin/python; env_kind="./.venv (exists)"
else
  base_python=$(command -v "${PYTHON:-python3}") \
    || die "${PYTHON:-python3} not found: install Python >= 3.10 (apt-get install python3 python3-venv), or set PYTHON"
  env_kind="./.venv (new: python -m venv)"
fi
read -r base_python py_version < <("$base_python" -c 'import sys; print(sys.executable, "%d.%d.%d" % sys.version_info[:3])')
"$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$base_python is Python $py_version; unimodal_free needs >= 3.10 (set PYTHON=python3.11, say)"

# ---------------------------------------------------------------- which OS packages, and may we use apt-get
missing_packages() {  # the optional OS packages not installed, one a line
  command -v espeak-ng >/dev/null || echo espeak-ng
  [ -d /usr/share/icons/Adwaita/48x48 ] || echo adwaita-icon-theme
  command -v chromium >/dev/null || echo chromium
  command -v chromedriver >/dev/null || echo chromium-driver
}
mapfile -t missing < <(missing_packages)
sudo=""
if ! command -v apt-get >/dev/null; then
  apt="no (apt-get not found)"
elif [ "$(id -u)" = 0 ]; then
  apt="yes (root)"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  apt="yes (passwordless sudo)"; sudo=sudo
else
  apt="no (not root and no passwordless sudo)"
fi

if [ "$plan_only" = 1 ]; then
  echo "python: $base_python ($py_version)"
  echo "environment: $env_dir, $env_kind"
  echo "os packages missing: ${missing[*]:-none}"
  echo "apt-get: $apt"
  echo "torch: $torch, $torch_from"
  echo "pip install: -e .[$extras]"
  exit 0
fi

# ---------------------------------------------------------------- OS packages (optional)
lost() {
  case $1 in
    espeak-ng) echo "note: espeak-ng is not installed: the demo data cannot be generated (espeak-ng speaks its captions), so the quick-start training and the tests that use the demo fail; install it with apt-get install espeak-ng, or train on your own shards" >&2 ;;
    adwaita-icon-theme) echo "note: adwaita-icon-theme is not installed: the icon corpus (unimodal_free.data.corpora.icons) and its test need it; install it with apt-get install adwaita-icon-theme" >&2 ;;
    chromium|chromium-driver) echo "note: $1 is not installed: the explorer's browser test (tests/test_explore.py) needs chromium and chromium-driver and fails without them; install them with apt-get install chromium chromium-driver" >&2 ;;
  esac
}
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${apt%% *}" = yes ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } \
      || echo "note: apt-get install ${missing[*]} failed (messages above)" >&2
    mapfile -t missing < <(missing_packages)
  else
    echo "note: not installing OS packages: apt-get: $apt" >&2
  fi
  for p in "${missing[@]}"; do lost "$p"; done
fi

# ---------------------------------------------------------------- the environment
if [ ! -x "$env_dir/bin/python" ]; then
  if [ -L .venv ]; then rm .venv; fi  # a link to an environment that is gone
  "$base_python" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$base_python cannot create a virtual environment (no venv/ensurepip module): apt-get install python3-venv, or activate an environment of your own and run again"
  echo "creating the virtual environment $env_dir ($base_python, Python $py_version)" >&2
  "$base_python" -m venv "$env_dir"
elif [ "$env_dir" != "$ROOT/.venv" ]; then
  # An active environment: make ./.venv lead to it, unless ./.venv is an environment of its own.
  if [ -L .venv ] || [ ! -e .venv ]; then
    ln -sfn "$env_dir" .venv
  elif [ "$(cd .venv && pwd -P)" != "$(cd "$env_dir" && pwd -P)" ]; then
    echo "note: installing into $env_dir (active); ./.venv is another environment, so use $env_dir, not .venv" >&2
  fi
fi
python=$env_dir/bin/python
activate="activate it with: . .venv/bin/activate"
[ -e "$env_dir/bin/activate" ] || activate="it is active (it has no bin/activate, as conda environments have none)"
pip() { "$python" -m pip --disable-pip-version-check "$@"; }

# ---------------------------------------------------------------- torch wheel, then the package
torch_builds() {  # installed torch and torchaudio versions, e.g. "2.11.0+cpu 2.11.0+cpu" ("-" when absent)
  "$python" - <<'EOF'
import importlib.metadata as m
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "-"
print(version("torch"), version("torchaudio"))
EOF
}
# A run that finds what the last one installed (same checkout, pyproject.toml, torch choice and
# builds, the extras among those installed, the package importable from here) calls no pip:
# pip's no-op takes 20 s. The stamp's first line is that state, its second the extras installed.
stamp_file=$env_dir/.unimodal_free-setup
stamp() { echo "$ROOT $torch $(sha256sum pyproject.toml | cut -c1-16) $(torch_builds)"; }
installed_extras=""
if [ "$(head -n 1 "$stamp_file" 2>/dev/null)" = "$(stamp)" ]; then installed_extras=$(sed -n 2p "$stamp_file"); fi
has_extras=1
for e in ${extras//,/ }; do [[ ",$installed_extras," == *",$e,"* ]] || has_extras=0; done
if [ -n "$installed_extras" ] && [ "$has_extras" = 1 ] && (cd / && "$python" -I -c \
    'import sys, unimodal_free; sys.exit(not unimodal_free.__file__.startswith(sys.argv[1] + "/"))' "$ROOT") 2>/dev/null; then
  echo "up to date: $env_dir (as the last run left it; delete $stamp_file to reinstall); $activate" >&2
  exit 0
fi
rm -f "$stamp_file"

builds=$(torch_builds)
pins=$(grep -oE '"torch(audio)?==[^"]+"' pyproject.toml | tr -d '"' | tr '\n' ' ')  # torch==X torchaudio==Y
if [ "$torch" = cpu ]; then
  want=$(echo "$pins" | sed -E 's/torch(audio)?==([^ ]+)/\2+cpu/g; s/ $//')
  if [ "$builds" != "$want" ]; then
    log=$(mktemp)
    echo "installing ${pins}(CPU) from $CPU_INDEX" >&2
    # Only these two from the CPU index (their dependencies come from PyPI with the package below);
    # pip replaces an installed build only once the new one is downloaded.
    # shellcheck disable=SC2086  # the pins are two words
    pip install -q --no-deps --force-reinstall $pins --index-url "$CPU_INDEX" >"$log" 2>&1 \
      || die "pip could not install $pins(CPU) from $CPU_INDEX (unreachable from here?; pip's messages: $log); --torch cuda installs PyPI's wheel instead"
    rm -f "$log"
  fi
elif [[ $builds == *+cpu* ]]; then
  echo "replacing the CPU-only torch build ($builds) with PyPI's wheel" >&2
  pip uninstall -q -y torch torchaudio
fi
echo "installing unimodal_free (-e .[$extras]) into $env_dir" >&2
pip install -q -e ".[$extras]"
for e in ${installed_extras//,/ }; do [[ ",$extras," == *",$e,"* ]] || extras+=",$e"; done  # pip left them
{ stamp; echo "$extras"; } >"$stamp_file"
echo "ready: $env_dir (torch $(torch_builds | cut -d' ' -f1)); $activate" >&2
