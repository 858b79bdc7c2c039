#!/usr/bin/env bash
# The test suite (README.md, docs/lava-runtime.md), in two parts:
#   the core's, on the core's Python:        pytest tests -m "not lava_runtime"
#   the Lava runtime's, on its Python 3.10:  the tests that import Lava or lava-dl themselves
# One after the other: side by side on CI's 2 cores they thrashed (Lava's dozens of processes
# beside slayer's training) and took longer than in turn. The core's part runs on JOBS pytest
# workers (default: the cores, at most 4), each with one torch thread (OMP_NUM_THREADS): its
# tests mostly wait on one single-threaded CLI process, so on 2 cores this takes 15 min, not 22.
# The runtime's part keeps every core busy with Lava's processes already. MARK narrows both parts
# (`MARK="not slow" bash scripts/test.sh` runs the fast layer); other arguments go to both
# pytest runs. Both parts always run; the exit status is non-zero when either failed.
set -uo pipefail
cd "$(dirname "$0")/.."

mark=${MARK:-}
jobs=${JOBS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
echo "== the core's tests ($(.venv/bin/python -V), $jobs workers)"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python -m pytest tests -m "not lava_runtime${mark:+ and ($mark)}" \
    -n "$jobs" "$@"
core=$?
echo "== the Lava runtime's tests"
.venv/bin/danet-deploy lava-runtime run pytest tests -m "lava_runtime${mark:+ and ($mark)}" -p no:cacheprovider "$@" </dev/null
lava=$?
echo "== core: exit $core; Lava runtime: exit $lava"
[ "$core" -eq 0 ] && [ "$lava" -eq 0 ]
