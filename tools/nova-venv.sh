#!/usr/bin/env bash
# Makes the virtual environment in which the Nova functional tests run real Nova code: one Nova
# release (with Placement and the test libraries that Nova's in-process functional fixtures
# import), Debian's rados/rbd bindings, cacheraw itself from this tree, and the compute-driver
# shim as tools/install.sh --nova-venv installs it. Idempotent: a venv made from the same
# inputs is kept (a second run returns in well under a second).
#
#   nova-venv.sh latest|27      prints the venv's folder on its last line
#
# latest: the newest Nova on PyPI when this was written; 27: Nova 27 (2023.1 Antelope), the
# oldest release cacheraw supports, with the dependencies of its time (uv resolves as of a date;
# SQLAlchemy, eventlet and dnspython as 2023.1's upper constraints had them).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
release=${1:?usage: nova-venv.sh latest|27}
python=${NOVA_VENV_PYTHON:-/usr/bin/python3}
# What Nova's functional fixtures import beside Nova. SQLAlchemy 2.1 warns where Nova's
# WarningsFixture turns warnings into errors.
test_libs=(fixtures testtools oslotest requests-mock wsgi-intercept ddt testscenarios
           testresources pytest)

case "$release" in
  latest)
    venv=$top/.venv-nova-latest
    specs=(nova==34.0.0 openstack-placement "SQLAlchemy<2.1")
    dates=(--exclude-newer 2026-12-01)
    ;;
  27)
    venv=$top/.venv-nova27
    specs=(nova==27.5.1 "openstack-placement<10" SQLAlchemy==1.4.46 eventlet==0.33.1
           dnspython==2.2.1)
    dates=(--exclude-newer 2023-10-01 --exclude-newer-package nova=2024-10-25)
    ;;
  *) echo "nova-venv.sh: unknown release '$release' (latest or 27)" >&2; exit 2 ;;
esac

# uv comes with the test requirements (make setup).
uv=$top/.venv/bin/uv
[ -x "$uv" ] || uv=$(command -v uv) || { echo "nova-venv.sh: no uv (make setup)" >&2; exit 1; }

stamp="$venv/.cacheraw-nova-venv"
# cacheraw is installed editable; the shim is copied, so its files count.
want=$({ cat "$0" "$top/tools/link-ceph-bindings.sh" "$top/nova-shim/setup.py" \
           "$top/nova-shim/nova/virt/cacheraw/__init__.py"
         printf '%s\n' "${specs[@]}" "${test_libs[@]}"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv"
  exit 0
fi

echo "nova-venv: making $venv (Nova ${specs[0]#nova==})" >&2
[ -x "$venv/bin/python" ] || "$uv" venv -q --python "$python" "$venv"
"$uv" pip install -q --python "$venv/bin/python" "${dates[@]}" "${specs[@]}" "${test_libs[@]}"
# cacheraw and the shim as on a compute host: without dependencies (Nova's venv has what the
# driver imports); cacheraw from this tree, so that the tests run the code being worked on.
"$uv" pip install -q --python "$venv/bin/python" --no-deps -e "$top"
"$uv" pip install -q --python "$venv/bin/python" --no-deps --reinstall-package cacheraw-nova \
  "$top/nova-shim"

"$top/tools/link-ceph-bindings.sh" "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Nova's test configuration looks for api-paste.ini under the folder that holds the nova
# package (its state_path); the wheel puts it in the venv's etc/nova.
ln -sfn "$venv/etc" "$site/etc"
"$venv/bin/python" -c 'import rados, rbd, nova.virt.cacheraw' >&2
echo "$want" > "$stamp"
echo "$venv"
