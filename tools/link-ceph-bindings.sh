#!/usr/bin/env bash
# Makes Debian's rados/rbd bindings importable in a virtual environment: they are compiled
# modules in dist-packages; just those two are exposed to the venv through a folder of symlinks
# named in a .pth file (the rest of dist-packages stays out).
#
#   link-ceph-bindings.sh VENV
set -euo pipefail

venv=${1:?usage: link-ceph-bindings.sh VENV}
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
dir="$venv/ceph-bindings"
mkdir -p "$dir"
for so in /usr/lib/python3/dist-packages/rados.cpython-*.so \
          /usr/lib/python3/dist-packages/rbd.cpython-*.so; do
  ln -sfn "$so" "$dir/"
done
echo "$dir" > "$site/ceph-bindings.pth"
