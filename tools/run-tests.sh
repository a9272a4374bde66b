#!/usr/bin/env bash
# Runs pytest against the local stack: brings the stack up when it is not running and stops it
# again afterwards if this script started it. Arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=${VENV:-$top/.venv}/bin/python
stack=tools/stack/stack.py

# The benchmark holds a 4 GiB image and its RAW copy at once: a stack it starts keeps its data
# in memory (memstore, as its published results were measured), with a store big enough.
if [ "${1:-}" = "--bench" ]; then
  export CACHERAW_STACK_OSD=${CACHERAW_STACK_OSD:-memstore}
  export CACHERAW_STACK_MEMSTORE_MIB=${CACHERAW_STACK_MEMSTORE_MIB:-8192}
  # (g) compares cacheraw's Cinder driver with Cinder's own, without and with its image cache.
  export CACHERAW_STACK_CINDER_BACKENDS=${CACHERAW_STACK_CINDER_BACKENDS:-cacheraw,upstream,imagecache}
fi

started=0
if ! "$py" "$stack" status >/dev/null 2>&1; then
  "$py" "$stack" up
  started=1
fi
stop_stack() { [ "$started" = 1 ] && "$py" "$stack" down || true; }
trap stop_stack EXIT

if [ "${1:-}" = "--bench" ]; then
  shift
  "$py" tools/bench.py "$@"
else
  "$py" -m pytest -v -rfEs "$@"
fi
