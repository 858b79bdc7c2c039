#!/usr/bin/env bash
# Sets up the two environments (README.md, docs/lava-runtime.md):
#   .venv               the core: the newest Python 3.10-3.13 found, current torch and numpy,
#                       danet-deploy in editable mode with its test extras
#   .venv/lava-runtime  the Lava runtime: Python 3.10 with lava-nc 0.10.0 and lava-dl 0.6.0
#                       and their pins (torch 2.3.1, numpy < 2), built as
#                       `danet-deploy lava-runtime setup` builds it, at the same time as the core
# PYTHON=/path/to/python picks the core's interpreter, LAVA_PYTHON=/path/to/python3.10 the
# runtime's. Re-running is cheap: each part is skipped while what it was built from is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

CORE_VERSIONS="3.13 3.12 3.11 3.10"   # newest first; torch publishes wheels for each

version_of() {  # "3.12" when "$1" is a working Python that can create venvs, else nothing
    "$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

find_core_python() {
    if [ -n "${PYTHON:-}" ]; then
        [ -n "$(version_of "$PYTHON")" ] && { echo "$PYTHON"; return 0; }
        echo "PYTHON=$PYTHON is not a Python that can create virtual environments" >&2; return 1
    fi
    local root=""; command -v pyenv >/dev/null 2>&1 && root=$(pyenv root)
    for v in $CORE_VERSIONS; do
        local candidates=("python$v")
        if [ -n "$root" ]; then
            for p in $(ls -d "$root"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V -r); do candidates+=("$p"); done
        fi
        if command -v uv >/dev/null 2>&1; then
            local p; p=$(uv python find "$v" 2>/dev/null || true); [ -n "$p" ] && candidates+=("$p")
        fi
        candidates+=(/usr/bin/python"$v" /usr/local/bin/python"$v" /opt/homebrew/bin/python"$v")
        for c in "${candidates[@]}"; do
            if [ "$(version_of "$c")" = "$v" ]; then command -v "$c" || echo "$c"; return 0; fi
        done
    done
    return 1
}

if ! PY=$(find_core_python); then
    cat >&2 <<'MSG'
danet-deploy needs Python 3.10 or newer (3.13 preferred) and none was found. Install one with
    pyenv install 3.13    or    uv python install 3.13    or    sudo apt-get install python3 python3-venv
or point to an interpreter:  PYTHON=/path/to/python3 make demo
MSG
    exit 1
fi
want_version=$(version_of "$PY")
if [ ! -x .venv/bin/python ] || [ "$(version_of .venv/bin/python)" != "$want_version" ]; then
    echo "Creating .venv with $PY (Python $want_version)"
    rm -rf .venv
    "$PY" -m venv .venv
fi

# a first install downloads and unpacks two torch builds with their CUDA libraries at once:
# about 16 GB at the peak, 12 GB kept (measured; README.md), so say so before pip fails half-way
NEEDED_GB=16
if [ ! -f .venv/.danet-deploy-installed ] || [ ! -d .venv/lava-runtime ]; then
    free_gb=$(df -Pk . "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR > 1 {print int($4 / 1048576)}' | sort -n | head -1)
    if [ -n "$free_gb" ] && [ "$free_gb" -lt "$NEEDED_GB" ]; then
        echo "setup: only ${free_gb} GB free on this disk or on TMPDIR; the first install needs about ${NEEDED_GB} GB (pip will stop with 'No space left on device' if it runs out)" >&2
    fi
fi

# the Lava runtime is built while the core installs (both are mostly downloads); its
# builder needs only the standard library, so it runs from the checkout before the core is in
python_cmd=(.venv/bin/python -m danet_deploy.lava_runtime setup ${LAVA_PYTHON:+--python "$LAVA_PYTHON"})
"${python_cmd[@]}" &
runtime=$!
trap 'kill $runtime 2>/dev/null || true' EXIT

stamp=.venv/.danet-deploy-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "Installing danet-deploy and its dependencies into .venv (first time: about 5 minutes, 6 GB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23.1" "setuptools>=77" wheel
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
wait $runtime
trap - EXIT
