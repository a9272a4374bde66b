#!/usr/bin/env bash
# Installs cacheraw on a controller from its wheel, as OpenStack services are deployed from PyPI:
# one virtual environment of its own (the prefix), Debian's Ceph bindings made visible to it, the
# systemd unit, the sysusers snippet and /etc/cacheraw/cacheraw.conf.sample. Idempotent; an
# existing /etc/cacheraw/cacheraw.conf is never touched.
#
#   install.sh [--prefix DIR] [--wheel FILE] [--find-links DIR]     the worker
#   install.sh --cinder-venv DIR [--wheel FILE] [--find-links DIR]  the Cinder driver only
#   install.sh --nova-venv DIR [--wheel FILE] [--nova-wheel FILE]    the Nova driver only
#   install.sh --uninstall --nova-venv DIR  removes the Nova driver; Nova stays as it was
#   install.sh --uninstall [--prefix DIR]   removes the program; keeps configuration and logs
set -euo pipefail

prog=install.sh
prefix=/opt/cacheraw
wheel=""
find_links=""
cinder_venv=""
nova_venv=""
nova_wheel=""
uninstall=0
bindir=/usr/local/bin
python=${PYTHON:-/usr/bin/python3}
unit=/etc/systemd/system/cacheraw-worker.service
sysusers=/usr/lib/sysusers.d/cacheraw.conf
# The documentation the wheel carries (setup.py's data_files), besides docs/*.md.
doc=/usr/share/doc/cacheraw
docs=(README.md CHANGELOG.md LICENSE)
# qemu-img needs its built-in nbd and file drivers only, not qemu-block-extra (rbd, curl, ...).
debs=(python3-rados python3-rbd qemu-utils bubblewrap python3-venv)

usage() {
  cat <<EOF
usage: $prog [--prefix DIR] [--wheel FILE] [--find-links DIR] [--cinder-venv DIR]
       [--nova-venv DIR] [--nova-wheel FILE] [--uninstall]
  --prefix DIR       the worker's virtual environment (default /opt/cacheraw)
  --wheel FILE       the cacheraw wheel (default: the newest dist/cacheraw-*.whl beside this script)
  --find-links DIR   install from this folder of wheels only, without an index (offline)
  --cinder-venv DIR  install the Cinder driver into Cinder's own virtual environment DIR:
                     cacheraw alone, without dependencies; nothing of Cinder's changes
  --nova-venv DIR    install the Nova compute driver into Nova's own virtual environment DIR
                     (cacheraw and the shim cacheraw-nova, without dependencies), nothing else;
                     with --uninstall, remove them from there again
  --nova-wheel FILE  the cacheraw-nova wheel (default: the newest dist/cacheraw_nova-*.whl)
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
      --nova-venv) nova_venv=${2:?--nova-venv needs a directory}; shift 2 ;;
      --nova-wheel) nova_wheel=${2:?--nova-wheel needs a file}; shift 2 ;;
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

# Debian's rados/rbd bindings, made visible to the venv (tools/link-ceph-bindings.sh).
link_ceph_bindings() {
  bash "$(dirname "$0")/link-ceph-bindings.sh" "$prefix"
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
  install -d -m 0755 "$doc/docs"
  install -m 0644 "${docs[@]/#/$prefix/share/doc/cacheraw/}" "$doc/"
  install -m 0644 "$prefix/share/doc/cacheraw/docs/"*.md "$doc/docs/"
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
  echo "$prog: next: set the Cinder backend's volume_driver (see docs/install.md, Cinder" \
       "hosts), then restart cinder-volume"
}

# Keeps /etc/cacheraw (configuration, keyrings), the journal and the cacheraw user.
uninstall_worker() {
  local name
  need_root
  if systemd_runs && [ -e "$unit" ]; then
    systemctl disable --now cacheraw-worker || true
  fi
  rm -f "$unit" "$sysusers" "${docs[@]/#/$doc/}" "$doc"/docs/*.md
  rmdir "$doc/docs" "$doc" 2>/dev/null || true
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

# The Nova driver: cacheraw and the shim cacheraw-nova (nova/virt/cacheraw/, beside Nova's own
# drivers, the only place Nova loads a compute driver from) go into Nova's virtual environment
# without dependencies, from the wheel files only: Nova's packages stay exactly as they were.
# A stamp in the venv says whether cacheraw was there before, for --uninstall.
nova_stamp() {
  echo "$nova_venv/.cacheraw-nova"
}

need_nova_venv() {
  need_root
  [ -x "$nova_venv/bin/pip" ] || fail "not a virtual environment with pip: $nova_venv"
}

find_nova_wheel() {
  if [ -z "$nova_wheel" ]; then
    nova_wheel=$(ls -t "$(dirname "$wheel")"/cacheraw_nova-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$nova_wheel" ] \
      || fail "no cacheraw-nova wheel given and none beside $wheel (run 'make dist')"
  fi
  [ -f "$nova_wheel" ] || fail "no such wheel: $nova_wheel"
}

install_nova() {
  need_nova_venv
  "$nova_venv/bin/python" -c 'import nova.virt.libvirt.driver' 2>/dev/null \
    || fail "Nova's libvirt driver does not import in $nova_venv"
  find_wheel
  find_nova_wheel
  if [ ! -e "$(nova_stamp)" ]; then
    if "$nova_venv/bin/pip" show -q cacheraw >/dev/null 2>&1; then
      echo kept > "$(nova_stamp)"
    else
      echo installed > "$(nova_stamp)"
    fi
  fi
  echo "$prog: installing $(basename "$wheel") and $(basename "$nova_wheel") into $nova_venv"
  "$nova_venv/bin/pip" install -q --no-index --no-deps --force-reinstall "$wheel" "$nova_wheel"
  "$nova_venv/bin/python" -c 'import nova.virt.cacheraw' \
    || fail "nova.virt.cacheraw does not import in $nova_venv"
  echo "$prog: next: set [DEFAULT] compute_driver = cacheraw.LibvirtDriver in nova.conf (see" \
       "docs/install.md, Installing the Nova driver), then restart nova-compute"
}

uninstall_nova() {
  need_nova_venv
  if "$nova_venv/bin/pip" show -q cacheraw-nova >/dev/null 2>&1; then
    "$nova_venv/bin/pip" uninstall -q -y cacheraw-nova
  fi
  if [ "$(cat "$(nova_stamp)" 2>/dev/null)" = installed ]; then
    "$nova_venv/bin/pip" uninstall -q -y cacheraw
  fi
  rm -f "$(nova_stamp)"
  echo "$prog: removed the Nova driver from $nova_venv; set compute_driver back to" \
       "libvirt.LibvirtDriver before nova-compute restarts"
}

main() {
  parse_args "$@"
  if [ "$uninstall" = 1 ] && [ -n "$nova_venv" ]; then
    uninstall_nova
  elif [ -n "$nova_venv" ]; then
    install_nova
  elif [ "$uninstall" = 1 ]; then
    uninstall_worker
  elif [ -n "$cinder_venv" ]; then
    install_cinder
  else
    install_worker
  fi
}

main "$@"
