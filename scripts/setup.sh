#!/usr/bin/env bash
# Creates .venv with Python 3.10 (lava-nc 0.10.0 runs on 3.10 only) and installs
# danet-deploy in editable mode with its test extras. Re-running is cheap: the
# install is skipped while pyproject.toml, setup.py and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

is_py310() {  # true when "$1" is a working Python 3.10 that can create venvs
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

find_python310() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    candidates+=(python3.10)
    if command -v pyenv >/dev/null 2>&1; then
        local root; root=$(pyenv root)
        # newest 3.10.x that pyenv has installed, even when it is not the active version
        for p in $(ls -d "$root"/versions/3.10*/bin/python3.10 2>/dev/null | sort -V -r); do candidates+=("$p"); done
    fi
    if command -v uv >/dev/null 2>&1; then
        local p; p=$(uv python find 3.10 2>/dev/null || true); [ -n "$p" ] && candidates+=("$p")
    fi
    candidates+=(/usr/bin/python3.10 /usr/local/bin/python3.10 /opt/homebrew/bin/python3.10 python3)
    for c in "${candidates[@]}"; do
        if is_py310 "$c"; then command -v "$c" || echo "$c"; return 0; fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! is_py310 .venv/bin/python; then
    if ! PY=$(find_python310); then
        cat >&2 <<'MSG'
danet-deploy needs Python 3.10 (lava-nc 0.10.0 supports only 3.10) and none was found.
Install it with one of:
    pyenv install 3.10            # then re-run this command
    sudo apt-get install python3.10 python3.10-venv
    uv python install 3.10
or point to an existing interpreter:  PYTHON=/path/to/python3.10 make demo
MSG
        exit 1
    fi
    echo "Creating .venv with $PY"
    rm -rf .venv
    "$PY" -m venv .venv
fi

stamp=.venv/.danet-deploy-installed
want=$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "Installing danet-deploy and its dependencies into .venv (first time: about 3 minutes, 5.6 GB)"
    .venv/bin/python -m pip install --quiet --upgrade "pip>=23.1" "setuptools>=77" wheel
    .venv/bin/python -m pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
fi
