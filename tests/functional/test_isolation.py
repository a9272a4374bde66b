"""qemu-img, which parses hostile bytes, holds nothing worth taking: looked at from outside
while it converts on the real stack, it has a network namespace of its own, no TCP socket, no
block driver module loaded, and the Ceph key is nowhere in its argv, environment or open files;
the cache is still exact."""

import os

from tests.functional.helpers import FAST
from tests.functional.helpers import assert_cache_matches
from tests.functional.helpers import converter_conf
from tests.functional.helpers import throttled_qemu_img
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until


def ceph_key(stack):
    with open(stack["ceph"]["users"]["cacheraw"]["keyring"]) as f:
        return next(line.split("=", 1)[1].strip() for line in f if line.strip().startswith("key"))


def descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        with open("/proc/%d/stat" % pid, "rb") as f:
            pid = int(f.read().rsplit(b")", 1)[1].split()[1])
    return False


def converting_qemu_img(worker_pid):
    """The pid of the qemu-img convert the worker runs (in its sandbox), or None."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                argv = f.read().split(b"\0")
            if argv[0].endswith(b"qemu-img") and argv[1:2] == [b"convert"] and \
                    descends_from(int(name), worker_pid):
                return int(name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def socket_inodes(table):
    with open(table) as f:
        lines = f.read().splitlines()[1:]
    column = 6 if "unix" in table else 9
    return {line.split()[column] for line in lines if len(line.split()) > column}


def test_qemu_img_has_no_network_no_key_and_only_its_sockets(start_worker, demo_images, qcow2,
                                                            ceph, stack, tmp_path):
    worker = start_worker(extra_conf=FAST + converter_conf("", throttled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, cache_raw="True")
    found = {}
    wait_until("qemu-img converting",
               lambda: found.setdefault("pid", converting_qemu_img(worker.proc.pid)) or
               found.pop("pid"), timeout=60)
    pid, key = found["pid"], ceph_key(stack).encode()
    proc = "/proc/%d/" % pid

    assert os.readlink(proc + "ns/net") != os.readlink("/proc/%d/ns/net" % worker.proc.pid)
    with open(proc + "cmdline", "rb") as f:
        assert key not in f.read()
    with open(proc + "environ", "rb") as f:
        environ = f.read()
    assert key not in environ and b"CEPH" not in environ
    # It opens the image and the cache with built-in drivers only: no block driver module
    # (Debian's qemu-block-extra: rbd, curl, iscsi, nfs, gluster, ssh) is loaded.
    with open(proc + "maps") as f:
        assert "/qemu/block-" not in f.read()
    sockets = set()
    for fd in os.listdir(proc + "fd"):
        target = os.readlink(proc + "fd/" + fd)
        if target.startswith("socket:["):
            sockets.add(target[len("socket:["):-1])
        elif target.startswith("/"):
            assert "ceph" not in target and "keyring" not in target, target
            if os.path.isfile(proc + "fd/" + fd):
                with open(proc + "fd/" + fd, "rb") as f:
                    assert key not in f.read(64 << 20), target
    # Its only sockets are Unix ones (the two NBD connections); its namespace has no TCP at all.
    assert sockets and sockets <= socket_inodes(proc + "net/unix")
    assert socket_inodes(proc + "net/tcp") == set() and socket_inodes(proc + "net/tcp6") == set()

    wait_status(demo_images, image["id"], "Cached", timeout=120)
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
