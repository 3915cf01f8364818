#!/usr/bin/env bash
# Install what the daemon (and with --test, the test suite) needs on Debian / Raspberry Pi OS,
# then create .venv with the package in it. Safe to run again: it only adds what is missing.
#   scripts/setup.sh [--test] [--plan]    --plan: print what would be installed, change nothing
# Exit status 4: a 32-bit ARM userland (armhf, armel), stopped before installing anything unless
# ASSISTANT_ALLOW_32BIT=1 (see below); 5: pip could not install the Python packages (its error shown).
# ASSISTANT_ARCH=armhf (etc.) stands in for the detected architecture, for tests.
set -euo pipefail
cd "$(dirname "$0")/.."

EXIT_32BIT=4
EXIT_PIP=5
runtime_pkgs=(python3 python3-venv python3-dev libportaudio2 espeak-ng)
test_pkgs=(mosquitto mosquitto-clients sox pulseaudio pulseaudio-utils libasound2-plugins alsa-utils systemd)
# A 32-bit Pi OS finds no wheels on PyPI for numpy, cffi, webrtcvad-wheels, pymicro-features and
# PyYAML: piwheels (Pi OS's extra index) has most of them, and these build the rest.
build_pkgs=(build-essential libffi-dev libyaml-dev)  # python3-dev is already a runtime package
piwheels="https://www.piwheels.org/simple"
python=${PYTHON:-python3}
extra_list=()
pkgs=("${runtime_pkgs[@]}")
test=false plan=false
for arg in "$@"; do
    case "$arg" in
        --test) test=true ;;
        --plan) plan=true ;;
        *) echo "usage: $0 [--test] [--plan]" >&2; exit 1 ;;
    esac
done
if $test; then
    pkgs+=("${test_pkgs[@]}")
    extra_list+=(test)
fi

# The userland's architecture, not the kernel's: a 32-bit Raspberry Pi OS on its default 64-bit
# kernel reports "aarch64" from uname -m, but installs armhf packages and runs a 32-bit Python.
userland_arch() {
    if [[ -n "${ASSISTANT_ARCH:-}" ]]; then
        echo "$ASSISTANT_ARCH"
    elif "$python" -c 'import platform, struct, sys
sys.exit(not (struct.calcsize("P") == 4 and platform.machine().startswith(("arm", "aarch"))))' 2>/dev/null; then
        echo armhf  # a 32-bit Python on ARM, whatever else is installed
    elif command -v dpkg >/dev/null; then
        dpkg --print-architecture
    else
        uname -m
    fi
}
arch=$(userland_arch)
bits32=false
case "$arch" in armhf | armel | armv7l | armv6l) bits32=true ;; esac
pip_env=()
if $bits32; then
    if [[ "${ASSISTANT_ALLOW_32BIT:-}" != 1 ]]; then
        cat >&2 <<MESSAGE
setup: this is a 32-bit ARM system ($arch). Install the 64-bit Raspberry Pi OS instead (Pi 3, 4, 5,
400, Zero 2 W, Compute Module 3/4/5): on 32-bit, PyPI has no wheels for numpy, cffi,
webrtcvad-wheels, pymicro-features and PyYAML, and Piper, the natural offline voice, has
none at all. A Pi 1, 2 (before v1.2), Zero or Zero W cannot run it.
To build here anyway (piwheels where it has wheels, a compiler for the rest; the first install
takes roughly 15 minutes with piwheels, over an hour if numpy must be compiled on a Pi 3):
    ASSISTANT_ALLOW_32BIT=1 $0 $*
MESSAGE
        exit $EXIT_32BIT
    fi
    pkgs+=("${build_pkgs[@]}")
    pip_env=("PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL:+$PIP_EXTRA_INDEX_URL }$piwheels")
    echo "setup: 32-bit $arch: wheels from piwheels, the rest built here; the first install takes a while" >&2
elif "$python" -c 'import platform, struct, sys
sys.exit(struct.calcsize("P") != 8 or platform.machine() not in ("x86_64", "aarch64"))'; then
    # Piper (the natural offline voice) and the echo canceller have wheels for 64-bit x86_64 and aarch64 only.
    extra_list+=(piper echo)
fi
extras=$( ((${#extra_list[@]})) && IFS=, && echo "[${extra_list[*]}]" || true)  # e.g. [piper,test]
if $plan; then
    echo "architecture: $arch"
    echo "system packages: ${pkgs[*]}"
    echo "python packages: .$extras ${pip_env[*]:-}"
    exit 0
fi

missing=()
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
        sudo=""
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        echo "installing system packages: ${missing[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "please install: ${missing[*]}" >&2
        exit 1
    fi
fi

stamp=".venv/.installed$extras"
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    # pip's own status and error, not a ModuleNotFoundError later on
    if ! env "${pip_env[@]}" .venv/bin/python -m pip install -q -e ".$extras" >.venv/pip.log 2>&1; then
        grep -v "is ignored" .venv/pip.log >&2 || true
        echo "setup: pip could not install the Python packages (its error is above; log: .venv/pip.log)" >&2
        exit $EXIT_PIP
    fi
    grep -v "is ignored" .venv/pip.log || true
    .venv/bin/python -c "import assistant, openai, paho.mqtt, webrtcvad, numpy"  # fail loudly if pip did
    touch "$stamp"
fi

if [[ -n "$extras" ]]; then
    scripts/ha-venv.sh  # the Home Assistant versions the tests run against (cached outside the clone)
fi
