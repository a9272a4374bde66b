#!/usr/bin/env bash
# Installs everything cacheraw and its local stack need on a fresh Debian 12 machine.
# Idempotent: a second run checks and returns in about a second.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$top/.venv}
python=${PYTHON:-python3}

# qemu-block-extra is for the benchmark's baseline (b) alone, qemu-img reading and writing RBD
# as the original pipeline does; cacheraw's own qemu-img needs none of its drivers (install.sh
# leaves it out).
debs=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
      qemu-utils qemu-block-extra rabbitmq-server uuid-runtime curl procps iproute2
      systemd-container debootstrap mariadb-server mariadb-client bubblewrap)

missing_debs() {
  local pkg
  for pkg in "${debs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
      || printf '%s\n' "$pkg"
  done
}

install_debs() {
  local missing
  missing=$(missing_debs)
  [ -z "$missing" ] && return 0
  echo "setup: installing Debian packages: $(echo $missing)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
}

# Debian's rados/rbd bindings, made visible to a venv (the main one by default).
link_ceph_bindings() {
  "$top/tools/link-ceph-bindings.sh" "${1:-$venv}"
}

install_venv() {
  local stamp="$venv/.cacheraw-setup" want
  want=$(cat "$top/requirements.txt" "$top/test-requirements.txt" "$top/setup.py" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "setup: installing the Python environment in $venv"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$top/requirements.txt" -r "$top/test-requirements.txt"
  "$venv/bin/pip" install -q --no-deps -e "$top"
  echo "$want" > "$stamp"
}

# The Python interpreter of version $1 (3.9): pyenv's, else one on the PATH that runs.
find_python() {
  local found
  found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -1)
  [ -n "$found" ] && { echo "$found"; return 0; }
  found=$(command -v "python$1" 2>/dev/null) && "$found" -c '' 2>/dev/null && echo "$found"
}

# The unit suite's environment for Python $1 (.venv-py39 for 3.9): cacheraw with the newest
# Cinder of tools/cinder-releases.txt on that Python, and the libraries of that release's era.
# Debian's Ceph bindings are built for its Python 3.11 only: the tests use stand-ins here.
install_python_venv() {
  local version=$1 dir="$top/.venv-py${1/./}" python row stamp want
  python=$(find_python "$version") || {
    echo "setup: no Python $version found (pyenv or python$version on the PATH)" >&2; return 1; }
  row=$(awk -v py="$version" '!/^#/ && $3 == py {row=$0} END {print row}' "$top/tools/cinder-releases.txt")
  [ -n "$row" ] || { echo "setup: no Cinder release for Python $version in tools/cinder-releases.txt" >&2; return 1; }
  stamp="$dir/.cacheraw-setup"
  want=$(echo "$row" | cat - "$top/requirements.txt" "$top/setup.py" | sha256sum | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  set -- $row
  echo "setup: Python $version with Cinder $2 (OpenStack $1, libraries as of $4) in $dir"
  rm -rf "$dir"
  "$venv/bin/uv" venv -q -p "$python" "$dir"
  "$venv/bin/uv" pip install -q -p "$dir/bin/python" --exclude-newer "$4" $(pins "$5") \
    -r "$top/requirements.txt" pytest hypothesis vermin "cinder==$2.*" -e "$top"
  echo "$want" > "$stamp"
}

# The pins column of tools/cinder-releases.txt as requirements ("-": none).
pins() {
  [ "$1" = "-" ] || echo "$1" | tr ',' ' '
}

# CACHERAW_STACK_OPENSTACK=<series>: the environment of that release's services for the stack
# (.venv-openstack-<series>): its Keystone, Glance and Cinder (Keystone's major version is
# Cinder's plus one, Glance's plus four, every series since 2023.1) on the row's Python with the
# libraries of their day, gunicorn and PyMySQL, and cacheraw's driver as tools/install.sh puts it
# in Cinder's environment (no dependencies); stack.py schemas then makes its database schemas.
install_openstack_venv() {
  local series=$1 dir="$top/.venv-openstack-$1" row python stamp want
  row=$(awk -v s="$series" '!/^#/ && $1 == s' "$top/tools/cinder-releases.txt")
  [ -n "$row" ] || { echo "setup: no OpenStack series $series in tools/cinder-releases.txt" >&2; return 1; }
  set -- $row
  python=$(find_python "$3") || { echo "setup: no Python $3 found for OpenStack $series" >&2; return 1; }
  stamp="$dir/.cacheraw-setup"
  # Made again when the row or this function changes.
  want=$({ echo "$row"; declare -f install_openstack_venv; } | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: OpenStack $1 (Cinder $2) on Python $3 (libraries as of $4) in $dir"
    rm -rf "$dir"
    "$venv/bin/uv" venv -q -p "$python" "$dir"
    "$venv/bin/uv" pip install -q -p "$dir/bin/python" --exclude-newer "$4" $(pins "$5") \
      "cinder==$2.*" "keystone==$(($2 + 1)).*" "glance==$(($2 + 4)).*" gunicorn PyMySQL
    echo "$want" > "$stamp"
  fi
  "$venv/bin/uv" pip install -q -p "$dir/bin/python" --no-deps -e "$top"
  # cinder-volume talks to Ceph through Debian's bindings, which are built for Python 3.11.
  link_ceph_bindings "$dir"
  "$dir/bin/python" -c 'import rados, rbd' 2>/dev/null || {
    echo "setup: Debian's Ceph bindings do not load on Python $3: the stack needs a series" \
         "tested on 3.11 in tools/cinder-releases.txt (2024.1)" >&2; return 1; }
}

install_debs
install_venv
link_ceph_bindings
# CACHERAW_PYTHONS: the Pythons besides the main one that `make test` runs the unit suite on.
for version in ${CACHERAW_PYTHONS-3.9 3.10 3.12}; do
  install_python_venv "$version"
done
if [ -n "${CACHERAW_STACK_OPENSTACK:-}" ]; then
  install_openstack_venv "$CACHERAW_STACK_OPENSTACK"
fi
"$venv/bin/python" -c 'import rados, rbd' || { echo "setup: rados/rbd bindings not importable" >&2; exit 1; }
# The database schemas of Keystone, Glance and Cinder, made once for this environment, so that
# the stack loads them in a second instead of running their migrations at each start.
"$venv/bin/python" "$top/tools/stack/stack.py" schemas
