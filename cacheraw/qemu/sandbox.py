"""The sandbox every qemu-img runs in: bubblewrap (``bwrap``) with namespaces of its own.

qemu-img parses hostile bytes; if an image takes it over, it has no network (a network namespace
with nothing but loopback), no Ceph key and no Ceph client, no /proc, no /etc, no home, none of
the worker's files: only /usr read-only, a minimal /dev, and what it is given (``binds``): the
folder of the two NBD sockets the worker serves the image and the cache on, or a downloaded
image file, read-only. Its environment is cleared. It runs as the worker's uid, in a user, mount,
network and PID namespace of its own, with no capabilities, and dies with its parent.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Tuple

BWRAP = "bwrap"
# What a dynamically linked program needs of the system, read-only.
BASE = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin", "--dev", "/dev"]
# The namespaces the unit lets the worker make (RestrictNamespaces=); the unit gives the worker
# (and so qemu-img) an IPC namespace of its own (PrivateIPC=); the hostname and the cgroup tree
# are not worth the exposure of allowing more.
NAMESPACES = ["--unshare-user", "--unshare-net", "--unshare-pid"]
ENVIRONMENT = (("LC_ALL", "C"), ("PATH", "/usr/bin:/bin"), ("MALLOC_ARENA_MAX", "2"))

# (path outside, path inside, writable)
Bind = Tuple[str, str, bool]


def argv(program: str, args: Iterable[str], binds: Iterable[Bind] = ()) -> List[str]:
    """The argv that runs ``program args`` in the sandbox, given ``binds``."""
    command = [BWRAP, *NAMESPACES, "--die-with-parent", "--cap-drop", "ALL", *BASE]
    program_path = os.path.abspath(program) if os.sep in program else None
    if program_path and not program_path.startswith("/usr/"):
        command += ["--ro-bind", program_path, program_path]
    for outside, inside, writable in dict.fromkeys(binds):
        command += ["--bind" if writable else "--ro-bind", outside, inside]
    command.append("--clearenv")
    for name, value in ENVIRONMENT:
        command += ["--setenv", name, value]
    return command + ["--", program, *args]
