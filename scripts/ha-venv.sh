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

# bench/side_by_side.py also talks to Home Assistant's own agents (the default one and
# openai_conversation) on the newest version: their requirements go into that venv, under a stamp
# of their own so the tests' stamp above stays as it is.
read -r version minor day <<<"${versions[-1]}"
venv="$cache/homeassistant-$version"
bench_domains=(conversation openai_conversation)
stamp="$venv/.bench-$(echo "${bench_domains[*]}" | md5sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    echo "installing the requirements of ${bench_domains[*]} into $venv (for bench/side_by_side.py)"
    constraints="$("$venv/bin/python" -c 'import homeassistant, os; print(os.path.dirname(homeassistant.__file__))')/package_constraints.txt"
    "$venv/bin/python" scripts/ha_requirements.py "${bench_domains[@]}" >"$venv/bench-requirements.txt"
    "$uv" pip install -q --python "$venv/bin/python" --exclude-newer "$day" -r "$venv/bench-requirements.txt" -c "$constraints"
    rm -f "$venv"/.bench-*
    touch "$stamp"
fi
