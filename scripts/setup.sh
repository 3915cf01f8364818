#!/usr/bin/env bash
# Install what the daemon (and with --test, the test suite) needs on Debian / Raspberry Pi OS,
# then create .venv with the package in it. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime_pkgs=(python3 python3-venv python3-dev libportaudio2 espeak-ng)
test_pkgs=(mosquitto mosquitto-clients sox pulseaudio pulseaudio-utils libasound2-plugins alsa-utils systemd)
extras=""
pkgs=("${runtime_pkgs[@]}")
if [[ "${1:-}" == "--test" ]]; then
    pkgs+=("${test_pkgs[@]}")
    extras="[test]"
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

python=${PYTHON:-python3}
stamp=".venv/.installed$extras"
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -e ".$extras" 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -c "import assistant, openai, paho.mqtt, webrtcvad, numpy"  # fail loudly if pip did
    touch "$stamp"
fi

if [[ -n "$extras" ]]; then
    scripts/ha-venv.sh  # the Home Assistant versions the tests run against (cached outside the clone)
fi
