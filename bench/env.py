"""What the benchmark measures against: the local stack's Ceph pool, image API and bus, a real
cacheraw-worker, and probes of processes' memory and of the local disk."""

import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import rbd
from oslo_config import cfg

from cacheraw.ceph import caches as ceph_caches
from cacheraw.ceph import store as ceph_store
from cacheraw.conf import register_opts
from cacheraw.exception import CacherawError
from cacheraw.qemu import inspection
from tests import image_client
from tests.image_client import ImageClient
from tests.notifications import Listener

TOP = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("CACHERAW_STACK_DIR", TOP / ".stack"))
VENV_BIN = Path(sys.executable).parent


class BenchError(Exception):
    """A reason the benchmark cannot run, said in one line."""


def timed(func, *args, **kwargs):
    began = time.monotonic()
    result = func(*args, **kwargs)
    return time.monotonic() - began, result


class Stack:
    """The local stack, as cacheraw's own user for Ceph and as users of the image API."""

    def __init__(self):
        facts_file = STATE / "stack.json"
        if not facts_file.exists():
            raise BenchError("no local stack (%s missing): run 'make bench', which starts one"
                             % facts_file)
        self.facts = json.loads(facts_file.read_text())
        self.conf_file = self.facts["cacheraw_conf"]
        self.conf = cfg.ConfigOpts()
        register_opts(self.conf)
        self.conf(["--config-file", self.conf_file])
        self.store = ceph_store.CephStore(self.conf)
        self.store.connect()
        # The store's connection: its handles (ioctx(), image()) and mon_json().
        self.conn = self.store.conn
        self.pool = self.conn.pool
        glance = self.facts["glance"]["url"]
        self.demo, self.service = (
            ImageClient(image_client.session(self.facts, name, timeout=300), glance,
                        name_prefix="bench") for name in ("demo", "cacheraw"))

    # -- Ceph, as the restricted cacheraw user

    def rbd_cli(self, *args, stdout=subprocess.DEVNULL):
        argv = ["rbd", "--conf", self.conf.ceph.conf, "--id", self.conf.ceph.user,
                "--keyring", self.conf.ceph.keyring, *args]
        done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, timeout=1200)
        if done.returncode:
            raise BenchError("rbd %s failed: %s" % (args[0], done.stderr.decode()[-300:]))
        return done.stdout

    def warm_up(self, size):
        """Write and remove ``size`` bytes, so that the OSD has its memory before the first
        measurement instead of faulting it in during it (memstore keeps data in memory)."""
        name = "bench-warmup-%s" % uuid.uuid4().hex[:8]
        self.rbd_cli("create", "--size", "%dM" % (size >> 20), self.spec(name))
        try:
            self.rbd_cli("bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "8",
                         "--io-total", "%dM" % (size >> 20), "--io-pattern", "seq",
                         self.spec(name))
        finally:
            self.remove_image(name)

    def spec(self, name, snapshot=None):
        return "%s/%s%s" % (self.pool, name, "@" + snapshot if snapshot else "")

    def du(self, name, snapshot=ceph_store.SNAP):
        """Used bytes of ``name@snapshot`` as ``rbd du`` prints them."""
        out = json.loads(self.rbd_cli("du", "--format", "json", self.spec(name, snapshot),
                                      stdout=subprocess.PIPE))
        return sum(i["used_size"] for i in out["images"] if i.get("snapshot") == snapshot)

    def layout(self, name):
        """Object size, features and whether the object map is valid."""
        with self.conn.image(name, read_only=True) as image:
            return {"object_size": image.stat()["obj_size"], "features": image.features(),
                    "object_map_valid": not image.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID}

    def clone_and_open(self, parent, name):
        """What a volume create from the cache does: a clone of its snapshot, opened and read
        at its first sector as a hypervisor attaching it would."""
        with self.conn.ioctx() as ioctx:
            rbd.RBD().clone(ioctx, parent, ceph_store.SNAP, ioctx, name)
            with rbd.Image(ioctx, name) as image:
                image.read(0, 4096)

    def remove_image(self, name):
        with self.conn.ioctx() as ioctx:
            try:
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                pass

    # -- RAW copies the baselines write themselves: the bench's own images, with no lease

    def create_raw(self, name, size):
        """An empty RBD image created as cacheraw creates its caches (cacheraw.ceph.caches):
        the cluster's default features without the object map, which publish_raw() builds."""
        features = ceph_caches.default_features(self.conn.connected())
        with self.conn.ioctx() as ioctx:
            rbd.RBD().create(ioctx, name, size, old_format=False, features=None
                             if features is None else features & ~ceph_caches.DEFERRED_FEATURES)

    def publish_raw(self, name):
        """What cacheraw does to a written cache: build the object map create_raw() left out
        (an ``rbd import`` has it already), snapshot as ``snap`` and protect it."""
        features = ceph_caches.default_features(self.conn.connected()) or 0
        with self.conn.image(name) as image:
            missing = features & ceph_caches.DEFERRED_FEATURES & ~image.features()
            if missing:
                image.update_features(missing, True)
                image.rebuild_object_map()
            image.create_snap(ceph_store.SNAP)
            image.protect_snap(ceph_store.SNAP)

    def qemu_opts(self, driver, name, snapshot=None):
        """A bare qemu-img's options for ``name`` in the pool, read with its own Ceph client."""
        options = {"driver": "rbd", "pool": self.conn.pool, "image": name,
                   "conf": self.conn.conffile, "user": self.conn.user}
        if snapshot:
            options["snapshot"] = snapshot
        return inspection.layered(driver, options)

    def pool_stored(self, changed_from=None, settle=2.5, timeout=30):
        """The pool's STORED bytes as the mgr's ``df`` reports them, once the statistics have
        settled: different from ``changed_from`` when given (a removal must show), then the same
        value read twice ``settle`` seconds apart (more than one statistics period)."""
        deadline = time.monotonic() + timeout
        last = self._stored()
        while changed_from is not None and last == changed_from \
                and time.monotonic() < deadline:
            time.sleep(0.5)
            last = self._stored()
        while True:
            time.sleep(settle)
            now = self._stored()
            if now == last or time.monotonic() > deadline:
                return now
            last = now

    def _stored(self):
        out = self.conn.mon_json({"prefix": "df", "detail": "detail"})
        return next(p["stats"]["stored"] for p in out["pools"] if p["name"] == self.pool)

    def pool_free(self):
        return self.store.pool_space()[0]

    def check_not_full(self):
        """A full OSD blocks writes without an error: say so instead of waiting forever. (A
        memstore OSD's usage count once wrapped below zero, to 16 EiB, after many images were
        written and removed; only a new stack mends that.)"""
        try:
            dump = self.conn.mon_json({"prefix": "osd dump"})
        except CacherawError:
            return
        full = [p["pool_name"] for p in dump["pools"] if "full" in p.get("flags_names", "")]
        if self.pool in full or "full" in dump.get("flags", "").split(","):
            raise BenchError("the Ceph cluster says pool %s is full (see 'ceph health detail'); "
                             "restart the stack (make stack-down) and run the bench again"
                             % self.pool)


class Events(Listener):
    """The image service's notifications, heard on a pool of our own, with their arrival
    times: when the worker is told of an upload, and when an image's Cached is committed."""

    def __init__(self, transport_url):
        super().__init__(transport_url, name="bench")

    def wait_for(self, predicate, timeout, what):
        """Arrival time of the first event (past or coming) for which predicate is true."""
        try:
            return super().wait_for(predicate, timeout, what)[0]
        except AssertionError as exc:
            raise BenchError(str(exc)) from None

    def uploaded(self, image_id, timeout=600):
        return self.wait_for(lambda k, p: k == "image.upload" and p.get("id") == image_id,
                             timeout, "the upload of %s" % image_id)

    def settled(self, image_id, timeout=600):
        """When the worker recorded Cached (or Error) on the image."""
        def done(kind, payload):
            status = (payload.get("properties") or {}).get("cache_raw_status")
            return (kind == "image.update" and payload.get("id") == image_id
                    and status in ("Cached", "Error"))
        return self.wait_for(done, timeout, "Cached on %s" % image_id)


class Worker:
    """A real cacheraw-worker on the stack, with a notification pool of its own."""

    def __init__(self, stack, workdir, slots, extra_conf=""):
        self.workdir = Path(workdir)
        self.conversion_dir = stack.conf.converter.conversion_dir
        name = "worker-%d-%s" % (slots, uuid.uuid4().hex[:6])
        override = self.workdir / (name + ".conf")
        self.metrics_port = _free_port()
        override.write_text("[notifications]\npool = bench-%s\n[worker]\n"
                            "max_concurrent_conversions = %d\nsweep_interval = 0\n"
                            "[metrics]\nenabled = true\nhost = 127.0.0.1\nport = %d\n"
                            % (uuid.uuid4().hex[:12], slots, self.metrics_port) + extra_conf)
        self.log_path = self.workdir / (name + ".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "cacheraw-worker"), "--config-file", stack.conf_file,
             "--config-file", str(override)], stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_log("started", 60)

    def _wait_for_log(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise BenchError("cacheraw-worker did not start; its log:\n%s"
                         % self.log_path.read_text(errors="replace")[-2000:])

    def wait_idle(self, quiet=1.0, timeout=60):
        """Wait until the worker has logged nothing for ``quiet`` seconds: it has handled the
        notifications of its own last updates (it checks the cache of each, and would rebuild
        a cache removed under it, as it should)."""
        deadline = time.monotonic() + timeout
        size, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.log_path.stat().st_size
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def counters(self):
        """The worker's counts of image API requests (by method), qemu-img runs (by
        subcommand) and Ceph connections, from its metrics."""
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        counts = {}
        for line in text.splitlines():
            for prefix, label in (("cacheraw_image_api_requests_total", "image_api_"),
                                  ("cacheraw_qemu_img_runs_total", "qemu_img_"),
                                  ("cacheraw_ceph_connections_total", "ceph_connections")):
                if line.startswith(prefix):
                    name, value = line.rsplit(" ", 1)
                    key = label + (name.split('"')[1] if '"' in name else "")
                    counts[key] = int(float(value))
        return counts

    def steps(self, image_id):
        """Seconds between the worker's log lines about an image: from its image.upload to
        'caching' (the image API calls before converting), to 'converted' (the conversion with
        its inspection and checks) or 'shared' (a cache made from the cache of an image with the
        same data), to 'cached as' (recording it)."""
        marks = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if image_id not in line:
                continue
            for mark, text in (("upload", "Received image.upload"), ("caching", ": caching"),
                               ("converted", "converted to RAW"), ("shared", ": same data as"),
                               ("cached", ": cached as")):
                if text in line and mark not in marks:
                    marks[mark] = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
        # A cache made from the cache of an image with the same data is not converted.
        order = ["upload", "caching", "shared" if "shared" in marks else "converted", "cached"]
        if not all(m in marks for m in order):
            return {}
        return {"%s_to_%s" % (a, b): (marks[b] - marks[a]).total_seconds()
                for a, b in zip(order, order[1:])}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Probe(threading.Thread):
    """Samples, every few milliseconds while it runs, the resident memory of a process and of
    its children (qemu-img) and the bytes of image data in a local directory."""

    INTERVAL = 0.05

    def __init__(self, pid, directory=None):
        super().__init__(daemon=True)
        self.pid = pid
        self.directory = directory
        self.rss = 0           # the process itself, bytes
        self.children_hwm = 0  # its children's peak, bytes
        self.disk = 0          # image data in the directory, bytes
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.rss = max(self.rss, _status_bytes(self.pid, "VmRSS"))
            for child in _children(self.pid):
                self.children_hwm = max(self.children_hwm, _status_bytes(child, "VmHWM"))
            if self.directory:
                self.disk = max(self.disk, _image_bytes(self.directory))
            self._stop_event.wait(self.INTERVAL)

    def stop(self):
        self._stop_event.set()
        self.join()
        return self


def _status_bytes(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _children(pid):
    """Children of every thread of the process (each conversion thread starts its own)."""
    found = []
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def _image_bytes(directory):
    """Bytes on disk of the files in the conversion directory (an image downloaded there); the
    folders of the NBD sockets hold no data."""
    total = 0
    for top, _dirs, files in os.walk(directory):
        for name in files:
            try:
                stat = os.stat(os.path.join(top, name), follow_symlinks=False)
            except OSError:
                continue
            if not os.path.stat.S_ISSOCK(stat.st_mode):
                total += stat.st_blocks * 512
    return total


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_measured(argv, **kwargs):
    """Run a command; (seconds, its peak resident memory in bytes)."""
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdout=kwargs.pop("stdout", subprocess.DEVNULL),
                            stderr=subprocess.PIPE, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise BenchError("%s failed (exit %d): %s" % (" ".join(argv[:2]), proc.returncode,
                                                      stderr[-300:]))
    return took, usage.ru_maxrss * 1024

