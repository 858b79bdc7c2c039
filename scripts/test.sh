#!/usr/bin/env bash
# The test suite (README.md, docs/lava-runtime.md), in two parts run side by side:
#   the core's, on the core's Python:        pytest tests -m "not lava_runtime"
#   the Lava runtime's, on its Python 3.10:  the tests that import Lava or lava-dl themselves
# MARK narrows both parts (`MARK="not slow" bash scripts/test.sh` runs the fast layer); other
# arguments go to both pytest runs. The runtime's output is shown when both have finished;
# the exit status is non-zero when either part failed.
set -uo pipefail
cd "$(dirname "$0")/.."

# the two parts share the machine: each gets half of its cores for torch's threads, so that
# they do not thrash (measured on 2 cores: 2 threads each made both parts slower than serial)
cores=$(nproc 2>/dev/null || echo 2)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores > 3 ? cores / 2 : 1 ))}

mark=${MARK:-}
core_mark="not lava_runtime${mark:+ and ($mark)}"
runtime_mark="lava_runtime${mark:+ and ($mark)}"
runtime_log=$(mktemp "${TMPDIR:-/tmp}/danet-deploy-runtime-tests.XXXXXX")
.venv/bin/danet-deploy lava-runtime run pytest tests -m "$runtime_mark" -p no:cacheprovider "$@" \
    >"$runtime_log" 2>&1 </dev/null &
runtime=$!
trap 'kill $runtime 2>/dev/null; rm -f "$runtime_log"' EXIT

echo "== the core's tests ($(.venv/bin/python -V)); the Lava runtime's run beside them"
.venv/bin/python -m pytest tests -m "$core_mark" "$@"
core=$?
wait $runtime
lava=$?
echo "== the Lava runtime's tests"
cat "$runtime_log"
echo "== core: exit $core; Lava runtime: exit $lava"
[ "$core" -eq 0 ] && [ "$lava" -eq 0 ]
