#!/usr/bin/env bash
# Install the Home Assistant versions the tests run against (tests/real_ha.py), each in its own venv
# cached outside the clone: ${XDG_CACHE_HOME:-~/.cache}/assistant-tests/homeassistant-<version>.
# Run by `scripts/setup.sh --test`. The first run takes a few minutes (uv, about 2 min a version; pip's
# resolver backtracks for far longer); later runs see the stamp and return at once.
# Home Assistant pip-installs its integrations' requirements at a first start; the tests start it with
# --skip-pip, so they are installed here (scripts/ha_requirements.py reads them from the manifests).
set -euo pipefail
cd "$(dirname "$0")/.."

# version, the Python minor it runs on, and a day soon after its release: packages are resolved as
# of that day (uv --exclude-newer), as Home Assistant does not pin all of its dependencies' own
# (2024.11.3 with today's josepy cannot even import). Keep in step with VERSIONS in tests/real_ha.py.
versions=("2024.11.3 3.12 2024-12-01" "2025.4.4 3.13 2025-05-01")
# integrations the test configuration sets up beyond Home Assistant's defaults
domains=(mqtt mqtt_statestream template generic_thermostat input_boolean input_number
    light switch sensor binary_sensor button text image number select cover climate)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/assistant-tests"

find_python() {  # a python of this minor version: pyenv's, else one on PATH
    local minor=$1 candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$minor".*/bin/python "$(command -v "python$minor" || true)"; do
        if [[ -x "$candidate" ]] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$minor'.split('.'))))" 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

uv=$(command -v uv || true)
if [[ -z "$uv" ]]; then
    [[ -x .venv/bin/uv ]] || .venv/bin/python -m pip install -q uv 2>&1 | grep -v "is ignored" || true
    uv=.venv/bin/uv
fi

for entry in "${versions[@]}"; do
    read -r version minor day <<<"$entry"
    venv="$cache/homeassistant-$version"
    stamp="$venv/.installed-$(echo "${domains[*]}" | md5sum | cut -c1-12)"
    [[ -f "$stamp" ]] && continue
    if ! python=$(find_python "$minor"); then
        echo "Home Assistant $version (for the tests) needs Python $minor: install it (e.g. pyenv install $minor) or put python$minor on PATH" >&2
        exit 1
    fi
    echo "installing Home Assistant $version for the tests into $venv (Python $minor; a few minutes, once)"
    start=$SECONDS
    [[ -x "$venv/bin/python" ]] || "$uv" venv -q --python "$python" "$venv"
    "$uv" pip install -q --python "$venv/bin/python" --exclude-newer "$day" "homeassistant==$version"
    constraints="$("$venv/bin/python" -c 'import homeassistant, os; print(os.path.dirname(homeassistant.__file__))')/package_constraints.txt"
    "$venv/bin/python" scripts/ha_requirements.py "${domains[@]}" >"$venv/requirements.txt"
    "$uv" pip install -q --python "$venv/bin/python" --exclude-newer "$day" -r "$venv/requirements.txt" -c "$constraints"
    "$venv/bin/hass" --version >/dev/null
    rm -f "$venv"/.installed-*
    touch "$stamp"
    echo "Home Assistant $version installed in $((SECONDS - start)) s"
done
