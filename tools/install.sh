#!/usr/bin/env bash
# Installs cacheraw on a controller from its wheel, as OpenStack services are deployed from PyPI:
# one virtual environment of its own (the prefix), Debian's Ceph bindings made visible to it, the
# systemd unit, the sysusers snippet and /etc/cacheraw/cacheraw.conf.sample. Idempotent; an
# existing /etc/cacheraw/cacheraw.conf is never touched.
#
#   install.sh [--prefix DIR] [--wheel FILE] [--find-links DIR]     the worker
#   install.sh --cinder-venv DIR [--wheel FILE] [--find-links DIR]  the Cinder driver only
#   install.sh --uninstall [--prefix DIR]   removes the program; keeps configuration and logs
set -euo pipefail

prog=install.sh
prefix=/opt/cacheraw
wheel=""
find_links=""
cinder_venv=""
uninstall=0
bindir=/usr/local/bin
python=${PYTHON:-/usr/bin/python3}
unit=/etc/systemd/system/cacheraw-worker.service
sysusers=/usr/lib/sysusers.d/cacheraw.conf
debs=(python3-rados python3-rbd qemu-utils qemu-block-extra python3-venv)

usage() {
  cat <<EOF
usage: $prog [--prefix DIR] [--wheel FILE] [--find-links DIR] [--cinder-venv DIR] [--uninstall]
  --prefix DIR       the worker's virtual environment (default /opt/cacheraw)
  --wheel FILE       the cacheraw wheel (default: the newest dist/cacheraw-*.whl beside this script)
  --find-links DIR   install from this folder of wheels only, without an index (offline)
  --cinder-venv DIR  install the Cinder driver into Cinder's own virtual environment DIR:
                     cacheraw alone, without dependencies; nothing of Cinder's changes
  --uninstall        remove the worker's program, unit and links; keep /etc/cacheraw and logs
EOF
}

fail() {
  echo "$prog: error: $*" >&2
  exit 1
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
      --wheel) wheel=${2:?--wheel needs a file}; shift 2 ;;
      --find-links) find_links=${2:?--find-links needs a directory}; shift 2 ;;
      --cinder-venv) cinder_venv=${2:?--cinder-venv needs a directory}; shift 2 ;;
      --uninstall) uninstall=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) fail "unknown argument: $1 (see $prog --help)" ;;
    esac
  done
  case "$prefix" in /*) ;; *) fail "--prefix must be an absolute path: $prefix" ;; esac
}

find_wheel() {
  if [ -z "$wheel" ]; then
    local top
    top=$(cd "$(dirname "$0")/.." && pwd)
    wheel=$(ls -t "$top"/dist/cacheraw-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] \
      || fail "no wheel given and none in $top/dist (run 'make dist', or --wheel FILE)"
  fi
  [ -f "$wheel" ] || fail "no such wheel: $wheel"
  wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
}

check_debs() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] \
    || fail "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})"
}

pip_install() {
  local pip=$1; shift
  if [ -n "$find_links" ]; then
    "$pip" install -q --no-index --find-links "$find_links" "$@"
  else
    "$pip" install -q "$@"
  fi
}

# Debian's rados/rbd bindings are compiled modules in dist-packages; expose just those two to the
# venv through a folder of symlinks named in a .pth file (the rest of dist-packages stays out).
link_ceph_bindings() {
  local site dir so
  site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  dir="$prefix/ceph-bindings"
  mkdir -p "$dir"
  for so in /usr/lib/python3/dist-packages/rados.cpython-*.so \
            /usr/lib/python3/dist-packages/rbd.cpython-*.so; do
    ln -sfn "$so" "$dir/"
  done
  echo "$dir" > "$site/ceph-bindings.pth"
  "$prefix/bin/python" -c 'import rados, rbd' \
    || fail "Debian's rados/rbd bindings do not load in $prefix (built for another Python?)"
}

# The wheel's checksum is kept in the venv: the same wheel again installs nothing.
install_wheel() {
  local stamp="$prefix/.cacheraw-wheel" want
  want=$(sha256sum "$wheel" | cut -d' ' -f1)
  [ -x "$prefix/bin/python" ] || "$python" -m venv "$prefix"
  link_ceph_bindings
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$prog: $(basename "$wheel") already installed in $prefix"
    return 0
  fi
  echo "$prog: installing $(basename "$wheel") into $prefix"
  pip_install "$prefix/bin/pip" "$wheel"
  # Same version, new build: replace cacheraw itself, its dependencies stay.
  pip_install "$prefix/bin/pip" --force-reinstall --no-deps "$wheel"
  echo "$want" > "$stamp"
}

systemd_runs() {
  [ -d /run/systemd/system ]
}

install_files() {
  local share="$prefix/share/cacheraw" name
  install -D -m 0644 "$share/cacheraw.sysusers.conf" "$sysusers"
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$sysusers"
  fi
  getent group cacheraw >/dev/null || fail "no group cacheraw (systemd-sysusers did not run)"
  # The unit runs the program of this prefix.
  sed "s|^ExecStart=/usr/bin/cacheraw-worker |ExecStart=$prefix/bin/cacheraw-worker |" \
    "$share/cacheraw-worker.service" > "$unit.tmp"
  chmod 0644 "$unit.tmp"
  mv "$unit.tmp" "$unit"
  install -d -m 0750 -o root -g cacheraw /etc/cacheraw
  install -m 0644 "$share/cacheraw.conf.sample" /etc/cacheraw/cacheraw.conf.sample
  install -D -m 0644 "$prefix/share/doc/cacheraw/README.md" /usr/share/doc/cacheraw/README.md
  for name in cacheraw-worker cacheraw-manage; do
    ln -sfn "$prefix/bin/$name" "$bindir/$name"
  done
  if systemd_runs; then
    systemctl daemon-reload
  fi
}

install_worker() {
  check_debs "${debs[@]}"
  need_root
  find_wheel
  install_wheel
  install_files
  if [ -e /etc/cacheraw/cacheraw.conf ]; then
    echo "$prog: kept /etc/cacheraw/cacheraw.conf"
    if systemd_runs && systemctl -q is-active cacheraw-worker; then
      echo "$prog: the running worker keeps its code until: systemctl restart cacheraw-worker"
    fi
  else
    echo "$prog: next: write /etc/cacheraw/cacheraw.conf (mode 0640, group cacheraw) from" \
         "/etc/cacheraw/cacheraw.conf.sample, then: systemctl enable --now cacheraw-worker"
  fi
}

# The driver needs nothing Cinder's environment lacks (Cinder, oslo.log, oslo.utils): cacheraw
# alone goes in, from the wheel, without an index; no package of Cinder's is added or upgraded.
install_cinder() {
  need_root
  [ -x "$cinder_venv/bin/pip" ] || fail "not a virtual environment with pip: $cinder_venv"
  find_wheel
  echo "$prog: installing $(basename "$wheel") into $cinder_venv, without dependencies"
  "$cinder_venv/bin/pip" install -q --no-index --no-deps --force-reinstall "$wheel"
  "$cinder_venv/bin/python" -c 'import cacheraw.cinder.driver' \
    || fail "the driver does not load in $cinder_venv (is it Cinder's environment?)"
  echo "$prog: next: set the Cinder backend's volume_driver (see README, Installing the Cinder" \
       "driver), then restart cinder-volume"
}

# Keeps /etc/cacheraw (configuration, keyrings), the journal and the cacheraw user.
uninstall_worker() {
  local name
  need_root
  if systemd_runs && [ -e "$unit" ]; then
    systemctl disable --now cacheraw-worker || true
  fi
  rm -f "$unit" "$sysusers" /usr/share/doc/cacheraw/README.md
  rmdir /usr/share/doc/cacheraw 2>/dev/null || true
  for name in cacheraw-worker cacheraw-manage; do
    if [ "$(readlink "$bindir/$name" 2>/dev/null)" = "$prefix/bin/$name" ]; then
      rm -f "$bindir/$name"
    fi
  done
  if [ -e "$prefix/.cacheraw-wheel" ]; then
    rm -rf "$prefix"
  fi
  if systemd_runs; then
    systemctl daemon-reload
  fi
  echo "$prog: removed cacheraw from $prefix; /etc/cacheraw and the logs are kept"
}

need_root() {
  [ "$(id -u)" -eq 0 ] || fail "run as root"
}

main() {
  parse_args "$@"
  if [ "$uninstall" = 1 ]; then
    uninstall_worker
  elif [ -n "$cinder_venv" ]; then
    install_cinder
  else
    install_worker
  fi
}

main "$@"
