#!/usr/bin/env bash
# Runs pytest against the local stack: brings the stack up when it is not running and stops it
# again afterwards if this script started it. Arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=${VENV:-$top/.venv}/bin/python
stack=tools/stack/stack.py

# The benchmark holds a 4 GiB image and its RAW copy at once. It runs on each OSD backend of
# CACHERAW_BENCH_OSDS (default: bluestore, the tests' default, then memstore, where the OSD keeps
# the data in memory), on a stack of its own for each, started and stopped here; N images at
# once on the backends of CACHERAW_BENCH_CONCURRENCY_OSDS (default memstore), and (g), volumes
# through Cinder, on those of CACHERAW_BENCH_VOLUMES_OSDS (default bluestore: a memstore OSD that
# had held the large images for a while once read as full during (g)). With a stack already running, it runs on that
# stack only.
if [ "${1:-}" = "--bench" ]; then
  shift
  if "$py" "$stack" status >/dev/null 2>&1; then
    echo "bench: a stack is running: measuring on it only ('make stack-down' for every backend)"
    exec "$py" tools/bench.py "$@"
  fi
  # (g) adds a volume beside the default image and its cache: 8 GiB of memstore hold them; on
  # bluestore, Cinder's own import writes the whole RAW of each volume (8 GiB filled up once).
  export CACHERAW_STACK_MEMSTORE_MIB=${CACHERAW_STACK_MEMSTORE_MIB:-8192}
  export CACHERAW_STACK_BLUESTORE_MIB=${CACHERAW_STACK_BLUESTORE_MIB:-20480}
  # (g) compares cacheraw's Cinder driver with Cinder's own, without and with its image cache.
  export CACHERAW_STACK_CINDER_BACKENDS=${CACHERAW_STACK_CINDER_BACKENDS:-cacheraw,upstream,imagecache}
  trap '"$py" "$stack" down >/dev/null 2>&1 || true' EXIT
  status=0
  for osd in $(echo "${CACHERAW_BENCH_OSDS:-bluestore,memstore}" | tr ',' ' '); do
    echo "bench: a stack with its OSD on $osd"
    extra=()
    case ",${CACHERAW_BENCH_CONCURRENCY_OSDS:-memstore}," in
      *",$osd,"*) ;;
      *) extra+=(--skip-concurrency) ;;
    esac
    case ",${CACHERAW_BENCH_VOLUMES_OSDS:-bluestore}," in
      *",$osd,"*) ;;
      *) extra+=(--skip-volumes) ;;
    esac
    # (h), root disks through Nova, beside (g) by default.
    case ",${CACHERAW_BENCH_ROOTS_OSDS:-bluestore}," in
      *",$osd,"*) ;;
      *) extra+=(--skip-roots) ;;
    esac
    CACHERAW_STACK_OSD=$osd "$py" "$stack" up
    CACHERAW_STACK_OSD=$osd "$py" tools/bench.py "${extra[@]}" "$@" || status=1
    "$py" "$stack" down
  done
  exit $status
fi

# --pythons: the unit suite runs as well on each Python of CACHERAW_PYTHONS, in the environment
# tools/setup.sh made for it (.venv-py39 for 3.9), one after the other in the background while
# the main run goes on; tests marked ceph_bindings or main_env run in the main run alone.
others=""
if [ "${1:-}" = "--pythons" ]; then
  shift
  others=$(mktemp -d)
  (
    for version in ${CACHERAW_PYTHONS-3.9 3.10 3.12}; do
      dir=$top/.venv-py${version/./}
      "$dir/bin/python" -m pytest -q -p no:cacheprovider --basetemp "$others/tmp-$version" \
        -m "not main_env" tests/unit > "$others/$version.log" 2>&1
      echo $? > "$others/$version.rc"
    done
  ) &
fi

# The other Pythons' results, after the main run: a summary line each, the whole output of a
# run that failed. Returns non-zero when one failed.
report_others() {
  local version rc status=0
  [ -n "$others" ] || return 0
  wait
  for version in ${CACHERAW_PYTHONS-3.9 3.10 3.12}; do
    rc=$(cat "$others/$version.rc" 2>/dev/null || echo 1)
    if [ "$rc" != 0 ]; then
      cat "$others/$version.log"
      status=1
    fi
    echo "unit suite on Python $version: $(tail -1 "$others/$version.log" | tr -d '=' | sed 's/^ *//')"
  done
  rm -rf "$others"
  return $status
}

# --split: the functional suites of SECOND_GROUP run at the same time as the rest, on a second
# stack of their own (state in .stack-second, every port moved 10000 further), started and
# stopped here; most of a functional test's time is spent waiting (leases, sweeps, restarts), so
# two stacks side by side halve the wall-clock time even on two cores. Their output follows the
# main run's. The container root of test_systemd_unit_live.py is built meanwhile.
SECOND_GROUP=${CACHERAW_SECOND_GROUP:-"test_systemd_unit_live.py test_nova.py test_manage.py
  test_identical.py test_cinder.py test_space.py test_glance_settings.py test_isolation.py
  test_stack.py test_sweep_breaker.py test_systemd_notify.py test_worker_startup.py
  test_metrics.py test_import.py test_recovery.py"}
second=""
if [ "${1:-}" = "--split" ]; then
  shift
  second=$(mktemp -d)
  files=()
  ignores=()
  for name in $SECOND_GROUP; do
    files+=("tests/functional/$name")
    ignores+=("--ignore=tests/functional/$name")
  done
  set -- "${ignores[@]}" "$@"
  (
    set +e
    export CACHERAW_STACK_DIR=$top/.stack-second
    export CACHERAW_STACK_PORT_OFFSET=$((${CACHERAW_STACK_PORT_OFFSET:-0} + 10000))
    "$py" "$stack" down >/dev/null 2>&1
    rc=1
    if "$py" "$stack" up > "$second/main.log" 2>&1; then
      "$py" -m pytest -v -rfEs -p no:cacheprovider --basetemp "$second/tmp" "${files[@]}" \
        >> "$second/main.log" 2>&1
      rc=$?
    fi
    echo $rc > "$second/rc"
    "$py" "$stack" down >> "$second/main.log" 2>&1
  ) &
  second_pid=$!
  if [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then
    "$py" tools/nspawn.py build > "$second/nspawn.log" 2>&1 &
  fi
fi

# The second group's output, once it ended; returns non-zero when it failed.
report_second() {
  [ -n "$second" ] || return 0
  wait "$second_pid" || true
  echo "== the suites run beside the main run, on a second stack =="
  cat "$second/main.log"
  local rc
  rc=$(cat "$second/rc" 2>/dev/null || echo 1)
  rm -rf "$second"
  [ "$rc" = 0 ]
}

started=0
stop_stack() {
  [ "$started" = 1 ] && "$py" "$stack" down
  # The second stack, when this script ends before its suites did (the main stack did not
  # start, an interrupt): its start or its tests are stopped, then the stack.
  if [ -n "$second" ] && kill -0 "$second_pid" 2>/dev/null; then
    pkill -TERM -P "$second_pid" 2>/dev/null
    wait "$second_pid" 2>/dev/null
  fi
  [ -z "$second" ] || CACHERAW_STACK_DIR=$top/.stack-second "$py" "$stack" down >/dev/null 2>&1
  true
}
trap stop_stack EXIT
# (stack.py up stops what it started when it fails.)
if ! "$py" "$stack" status >/dev/null 2>&1; then
  "$py" "$stack" up
  started=1
fi

status=0
if [ -z "$others" ]; then
  "$py" -m pytest -v -rfEs "$@" || status=$?
  report_second || { [ "$status" != 0 ] || status=1; }
  exit $status
fi
"$py" -m pytest -v -rfEs "$@" 2>&1 | tee "$others/main.log" || status=$?
main_summary=$(tail -1 "$others/main.log")
report_second || { [ "$status" != 0 ] || status=1; }
report_others || { [ "$status" != 0 ] || status=1; }
# The main run's own closing line last, as pytest printed it.
echo "$main_summary"
exit $status
