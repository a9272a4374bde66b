"""A Debian 12 controller with a real systemd as its PID 1, in a systemd-nspawn container.

The tests install cacheraw into it as an operator would and run its unit there
(tests/functional/test_systemd_unit_live.py).

    nspawn.py build   debootstrap the root once (kept in .cache/, rebuilt only when missing)
    nspawn.py boot    boot it in the foreground, for a person (press Ctrl-] three times to leave)

The root is read-only to the container (``--volatile=overlay``: every boot starts from the root as
built, its changes vanish at power-off). Host networking: the container reaches the local stack
on 127.0.0.1. This machine's PID 1 need not be systemd, so there is no machined and no system bus
to register with (``--register=no --keep-unit``), and nspawn gets a private tmpfs on
/run/systemd/nspawn; the container is driven with nsenter rather than machinectl.
"""

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("CACHERAW_NSPAWN_ROOT", TOP / ".cache" / "nspawn" / "bookworm"))
# What a controller has before cacheraw: systemd, and the Debian packages install.sh asks for.
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "python3-rados",
            "python3-rbd", "qemu-utils", "bubblewrap"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Commands inside get a clean environment, not the caller's (its virtualenv, pip settings, CI).
CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]


class NspawnError(Exception):
    pass


def mirror():
    """The Debian mirror apt on this machine uses."""
    sources = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M)
        if found and "security" not in found[1]:
            return found[1]
    return DEFAULT_MIRROR


def build(root=ROOT, log=print):
    """Build the root unless it is there; a half-built one never counts as built."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time (make test starts one early, the tests' fixture may ask meanwhile).
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(root, log)


def _build(root, log):
    if (root / "etc" / "os-release").exists():
        return False
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log("nspawn: building %s (debootstrap, about a minute)" % root)
    done = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                           "bookworm", str(partial), mirror()],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise NspawnError("debootstrap failed (%s): %s" % (done.returncode,
                                                           (done.stdout + done.stderr)[-3000:]))
    for cached in (partial / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()
    partial.rename(root)
    log("nspawn: built %s in %.0f s" % (root, time.monotonic() - began))
    return True


def boot_argv(root, name, binds=(), extra=()):
    bind_args = ["--bind-ro=%s:%s" % (host, inside) for host, inside in binds]
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn '
            '&& exec "$@"', "sh",
            "systemd-nspawn", "-D", str(root), "-b", "--volatile=overlay", "--machine", name,
            "--register=no", "--keep-unit", *bind_args, *extra]


class Container:
    """A booted root. ``run`` executes a command inside, as root, with a clean environment."""

    def __init__(self, root, name, log_path, binds=()):
        self.root = Path(root)
        self.name = name
        self.log_path = Path(log_path)
        self.binds = binds
        self.proc = None
        self.init_pid = None

    def boot(self, timeout=120):
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(boot_argv(self.root, self.name, self.binds),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.init_pid = self._wait_for_init(timeout)
            return self._wait_until_up(timeout)
        except BaseException:
            self.poweroff()
            raise

    def _wait_until_up(self, timeout):
        """Until systemd says the boot is done; before it answers on its private socket,
        systemctl says "offline" or cannot connect."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.run("systemctl", "is-system-running", "--wait", check=False,
                            timeout=timeout)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise NspawnError("container %s is %r after booting (%s); see %s"
                                  % (self.name, state, done.stderr.strip(), self.log_path))
            time.sleep(0.2)

    def _wait_for_init(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NspawnError("systemd-nspawn exited with %s; see %s"
                                  % (self.proc.returncode, self.log_path))
            for pid in children(self.proc.pid):
                if namespaced_pid(pid) == 1:
                    return pid
            time.sleep(0.1)
        raise NspawnError("no init in container %s after %ss" % (self.name, timeout))

    def run(self, *argv, check=True, timeout=120, input=None):
        done = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "--", *CLEAN_ENV,
                               *argv], capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and done.returncode != 0:
            raise NspawnError("%s failed in %s (%s):\n%s%s" % (" ".join(argv), self.name,
                                                               done.returncode, done.stdout,
                                                               done.stderr))
        return done

    def write(self, path, text, mode="0644", owner="root:root"):
        self.run("sh", "-c", 'cat > "$1" && chmod "$2" "$1" && chown "$3" "$1"', "sh", path,
                 mode, owner, input=text)

    def poweroff(self, timeout=60):
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.init_pid is None:
            self.proc.kill()
            self.proc.wait()
            return
        try:
            self.run("systemctl", "poweroff", check=False, timeout=30)
            self.proc.wait(timeout)
        except (subprocess.TimeoutExpired, NspawnError):
            os.kill(self.init_pid, signal.SIGRTMIN + 4)  # systemd's "power off now"
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def children(pid):
    try:
        text = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def namespaced_pid(pid):
    """The pid as the innermost PID namespace of the process sees it."""
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "boot"])
    parser.add_argument("--root", default=str(ROOT), help="the root's folder (%(default)s)")
    args = parser.parse_args()
    try:
        build(args.root)
    except (NspawnError, subprocess.TimeoutExpired) as exc:
        print("nspawn: error: %s" % exc, file=sys.stderr)
        return 1
    if args.command == "boot":
        os.execvp("unshare", boot_argv(args.root, "cacheraw-controller"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
