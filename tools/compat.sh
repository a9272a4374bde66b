#!/usr/bin/env bash
# make compat: the driver's unit tests (tests/unit/test_cinder_driver.py) against the real
# RBDDriver of each Cinder release of tools/cinder-releases.txt. Each release gets an environment
# of its own (.venv-compat/<series>) on the Python of its row, with that release's Cinder and the
# libraries of its day (uv --exclude-newer), and cacheraw without its dependencies, as
# tools/install.sh puts it into Cinder's environment. Prints a table of the results (also in
# .venv-compat/results.md); exits non-zero when a release fails. Arguments: series to run
# (default: all).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
uv=${VENV:-$top/.venv}/bin/uv
out=$top/.venv-compat
mkdir -p "$out"

find_python() {
  ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -1
}

# One release: its environment (made again only when its row changed), then its test run.
# Writes $out/<series>.result: "<passed line>" or "FAILED: <reason>".
run_release() {
  local series=$1 cinder=$2 version=$3 as_of=$4 pins=$5 dir=$out/$1 python began stamp
  began=$(date +%s)
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    echo "FAILED: no Python $version" > "$out/$series.result"
    return 1
  fi
  stamp="$series $cinder $version $as_of $pins"
  if [ "$(cat "$dir/.compat-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    "$uv" venv -q -p "$python" "$dir"
    # shellcheck disable=SC2046
    "$uv" pip install -q -p "$dir/bin/python" --exclude-newer "$as_of" "cinder==$cinder.*" \
      pytest $([ "$pins" = "-" ] || echo "$pins" | tr ',' ' ') > "$dir.install.log" 2>&1 \
      || { echo "FAILED: install (see $dir.install.log)" > "$out/$series.result"; return 1; }
    echo "$stamp" > "$dir/.compat-stamp"
  fi
  # As in Cinder's environment, cacheraw (the tree's: pytest puts it first on the path) with
  # none of its dependencies but what Cinder has.
  local log=$out/$series.log status=0
  (cd "$dir" && "$dir/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$top" \
     -c "$top/pytest.ini" --basetemp "$dir.tmp" "$top/tests/unit/test_cinder_driver.py") \
    > "$log" 2>&1 || status=$?
  local summary installed
  summary=$(tail -1 "$log" | tr -d '=' | sed 's/^ *//; s/ *$//')
  installed=$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("cinder"))')
  if [ "$status" = 0 ]; then
    echo "$installed|$summary|$(( $(date +%s) - began ))" > "$out/$series.result"
  else
    echo "$installed|FAILED: $summary (see $log)|$(( $(date +%s) - began ))" \
      > "$out/$series.result"
    return 1
  fi
}

rows=$(grep -v '^#' "$top/tools/cinder-releases.txt" | awk 'NF == 5')
if [ $# -gt 0 ]; then
  rows=$(echo "$rows" | awk -v want=" $* " 'index(want, " " $1 " ")')
fi
status=0
# Two at a time: the machine has two cores, and the installs wait on the network.
export -f run_release find_python
export top uv out
echo "$rows" | xargs -P 2 -L 1 bash -c 'run_release "$@"' _ || status=1

{
  echo "| OpenStack | Cinder | Python | libraries as of | tests/unit/test_cinder_driver.py |"
  echo "|---|---|---|---|---|"
  echo "$rows" | while read -r series cinder version as_of pins; do
    IFS='|' read -r installed summary seconds < "$out/$series.result" || true
    echo "| $series | ${installed:-$cinder} | $version | $as_of ${pins/#-/} | $summary |"
  done
} > "$out/results.md"
cat "$out/results.md"
exit $status
