#!/usr/bin/env bash
# Install the daemon as a systemd service: a venv under /opt/assistant, the config under
# /etc/assistant, a dedicated `assistant` user in the audio group. Run as root from a checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "run as root (sudo $0)" >&2; exit 1; }

scripts/setup.sh  # system packages (portaudio, espeak-ng, python3-venv)
id assistant >/dev/null 2>&1 || useradd --system --home /var/lib/assistant --shell /usr/sbin/nologin assistant
usermod -aG audio assistant

install -d -m 0755 /opt/assistant
python3 -m venv /opt/assistant/venv
/opt/assistant/venv/bin/pip install -q --upgrade pip
extra=""  # Piper where its wheels exist: a 64-bit Python on x86_64 or aarch64 (see pyproject.toml)
if /opt/assistant/venv/bin/python -c 'import platform, struct, sys
sys.exit(struct.calcsize("P") != 8 or platform.machine() not in ("x86_64", "aarch64"))'; then
    extra="[piper]"
fi
/opt/assistant/venv/bin/pip install -q ".$extra"
install -m 0644 README.md /opt/assistant/README.md

install -d -m 0750 -g assistant /etc/assistant
install -d -m 0700 /etc/assistant/credentials
[[ -f /etc/assistant/assistant.toml ]] || install -m 0640 -g assistant config/assistant.example.toml /etc/assistant/assistant.toml
for name in openai_api_key azure_openai_api_key mqtt_password; do
    [[ -f /etc/assistant/credentials/$name ]] || install -m 0600 /dev/null /etc/assistant/credentials/$name
done

install -m 0644 systemd/assistant.service /etc/systemd/system/assistant.service
systemctl daemon-reload
systemctl enable assistant.service
echo "Installed. Edit /etc/assistant/assistant.toml, put your API key in /etc/assistant/credentials/openai_api_key,"
echo "check with: sudo -u assistant /opt/assistant/venv/bin/assistant check --config /etc/assistant/assistant.toml"
echo "then: systemctl start assistant && journalctl -u assistant -f"
