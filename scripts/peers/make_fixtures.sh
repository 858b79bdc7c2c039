#!/usr/bin/env bash
# Rebuilds tests/data/peers/: networks built and exported by sinabs, norse and rockpool
# themselves, with their own output spike counts. These peers do not install beside
# danet-deploy's pinned torch 2.3.1 and nir 1.0.8 (sinabs 3.1.3 pins nir <= 1.0.4,
# norse 1.1.0 needs a newer torch), so each gets its own venv under .peers/ (Python 3.11).
# Not part of `make test`: the fixtures it writes are committed, and the tests read them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON311:-$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.11*/bin/python3.11 2>/dev/null \
    | sort -V | tail -1)}
PY=${PY:-python3.11}
OUT=tests/data/peers

venv() {  # venv NAME PACKAGES...: a venv under .peers/ with exactly these pins
    local dir=.peers/$1; shift
    [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q "$@"
    echo "$dir/bin/python"
}

SINABS=$(venv sinabs torch==2.13.0 sinabs==3.1.3)
NORSE=$(venv norse-rockpool torch==2.14.1 rockpool==3.1.0 norse==1.1.0)
mkdir -p "$OUT"
"$SINABS" scripts/peers/build.py sinabs "$OUT"
"$NORSE" scripts/peers/build.py norse "$OUT"
"$NORSE" scripts/peers/build.py rockpool "$OUT"
