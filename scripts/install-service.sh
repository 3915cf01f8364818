#!/usr/bin/env bash
# Install the daemon as a systemd service: a venv under /opt/assistant, the config under
# /etc/assistant, a dedicated `assistant` user in the audio group. Run as root from a checkout.
#   scripts/install-service.sh [--lean-alsa [--playback CARD] [--capture CARD] | --echo-cancel]
# --lean-alsa: the daemon opens its sound card(s) directly through its own ALSA configuration
# (/etc/assistant/asound.conf, from scripts/lean_alsa.py), without the PulseAudio / PipeWire /
# JACK plugins ALSA's default one loads: about 17 MB less memory. The card is then the daemon's alone.
# --echo-cancel: the daemon plays and records through its own PulseAudio (systemd/assistant-pulse.service,
# /etc/assistant/echo-cancel.pa) with the WebRTC echo canceller, so the wake word is heard while it speaks.
set -euo pipefail
cd "$(dirname "$0")/.."
lean_alsa=false
echo_cancel=false
card_args=()
usage="usage: $0 [--lean-alsa [--playback CARD] [--capture CARD] | --echo-cancel]"
while (($#)); do
    case "$1" in
        --lean-alsa) lean_alsa=true ;;
        --echo-cancel) echo_cancel=true ;;
        --playback | --capture) card_args+=("$1" "${2:?$1 needs a card}"); shift ;;
        *) echo "$usage" >&2; exit 1 ;;
    esac
    shift
done
if $lean_alsa && $echo_cancel; then
    echo "--lean-alsa and --echo-cancel exclude each other: the canceller needs PulseAudio between the daemon and the card" >&2
    echo "$usage" >&2
    exit 1
fi
if $echo_cancel && dpkg-query -W -f='${Status}' pipewire-pulse 2>/dev/null | grep -q "ok installed"; then
    echo "PipeWire serves PulseAudio clients here (pipewire-pulse); installing PulseAudio would replace it." >&2
    echo "Use PipeWire's own echo canceller instead: README, \"Echo cancellation\"." >&2
    exit 1
fi
[[ $(id -u) -eq 0 ]] || { echo "run as root (sudo $0)" >&2; exit 1; }

scripts/setup.sh  # system packages (portaudio, espeak-ng, python3-venv)
id assistant >/dev/null 2>&1 || useradd --system --home /var/lib/assistant --shell /usr/sbin/nologin assistant
usermod -aG audio assistant

install -d -m 0755 /opt/assistant
python3 -m venv /opt/assistant/venv
/opt/assistant/venv/bin/pip install -q --upgrade pip
extra=""  # Piper and the echo canceller where their wheels exist: a 64-bit Python on x86_64 or aarch64 (see pyproject.toml)
if /opt/assistant/venv/bin/python -c 'import platform, struct, sys
sys.exit(struct.calcsize("P") != 8 or platform.machine() not in ("x86_64", "aarch64"))'; then
    extra="[piper,echo]"
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
if $lean_alsa; then
    command -v aplay >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq alsa-utils >/dev/null
    python3 scripts/lean_alsa.py "${card_args[@]}" >/etc/assistant/asound.conf.new
    mv /etc/assistant/asound.conf.new /etc/assistant/asound.conf
    chmod 0644 /etc/assistant/asound.conf
    install -d -m 0755 /etc/systemd/system/assistant.service.d
    printf '[Service]\nEnvironment=ALSA_CONFIG_PATH=/etc/assistant/asound.conf\n' \
        >/etc/systemd/system/assistant.service.d/lean-alsa.conf
    echo "lean ALSA: /etc/assistant/asound.conf (remove /etc/systemd/system/assistant.service.d/lean-alsa.conf to undo)"
    grep "^# \(playback\|capture\)" /etc/assistant/asound.conf
fi
if $echo_cancel; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pulseaudio pulseaudio-utils libasound2-plugins >/dev/null
    # The household's own edits (which card) are kept; the shipped file is beside it for comparison.
    [[ -f /etc/assistant/echo-cancel.pa ]] || install -m 0644 config/echo-cancel.pa /etc/assistant/echo-cancel.pa
    install -m 0644 config/echo-cancel.pa /etc/assistant/echo-cancel.pa.shipped
    install -m 0644 systemd/assistant-pulse.service /etc/systemd/system/assistant-pulse.service
    install -d -m 0755 /etc/systemd/system/assistant.service.d
    printf '[Unit]\nRequires=assistant-pulse.service\nAfter=assistant-pulse.service\n[Service]\nEnvironment=PULSE_SERVER=unix:/run/assistant-pulse/native\n' \
        >/etc/systemd/system/assistant.service.d/echo-cancel.conf
    rm -f /etc/systemd/system/assistant.service.d/lean-alsa.conf  # the two exclude each other
    echo "echo cancellation: assistant-pulse.service, /etc/assistant/echo-cancel.pa (to undo: systemctl disable --now"
    echo "assistant-pulse; rm /etc/systemd/system/assistant.service.d/echo-cancel.conf; systemctl daemon-reload)"
fi
systemctl daemon-reload
if $echo_cancel; then systemctl enable assistant-pulse.service; fi
systemctl enable assistant.service
echo "Installed. Edit /etc/assistant/assistant.toml, put your API key in /etc/assistant/credentials/openai_api_key,"
echo "check with: sudo -u assistant /opt/assistant/venv/bin/assistant check --config /etc/assistant/assistant.toml"
echo "then: systemctl start assistant && journalctl -u assistant -f"
