"""Fixtures for the functional tests: the real local stack (tools/stack/stack.py).

When the stack is missing the tests are skipped on a developer's machine and FAIL in CI (CI=true):
a functional test never passes by not running.
"""

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import image_client
from tests.conftest import in_ci
from tests.image_client import ImageClient
from tests.notifications import Listener

TOP = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("CACHERAW_STACK_DIR", TOP / ".stack"))
VENV_BIN = Path(sys.executable).parent
# A worker's configuration for tests that wait on its sweep and its leases.
FAST = "[worker]\nsweep_interval = 2\n[ceph]\nlock_duration = 10\n"


def need(condition, why):
    if condition:
        return
    if in_ci():
        pytest.fail("the local stack is required in CI: %s" % why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def stack():
    facts_file = STATE / "stack.json"
    need(facts_file.exists(), "no local stack (%s missing): run 'make stack-up'" % facts_file)
    facts = json.loads(facts_file.read_text())
    done = subprocess.run([sys.executable, str(TOP / "tools/stack/stack.py"), "status"],
                          capture_output=True, text=True, timeout=30)
    need(done.returncode == 0, "the local stack is not running:\n" + done.stdout)
    return facts


@pytest.fixture(scope="session")
def sessions(stack):
    return {name: image_client.session(stack, name) for name in stack["keystone"]["users"]}


@pytest.fixture(scope="session")
def demo_images(stack, sessions):
    return ImageClient(sessions["demo"], stack["glance"]["url"])


@pytest.fixture(scope="session")
def service_images(stack, sessions):
    return ImageClient(sessions["cacheraw"], stack["glance"]["url"])


@pytest.fixture(scope="session")
def alt_images(stack, sessions):
    """A member of another project than demo's ('alt')."""
    need("alt" in sessions, "the stack has no 'alt' project: restart it with 'make stack-down "
                            "stack-up'")
    return ImageClient(sessions["alt"], stack["glance"]["url"])


def connect_as_cacheraw(stack):
    """A connection to the stack's cluster as the restricted cacheraw user."""
    import rados
    user = stack["ceph"]["users"]["cacheraw"]
    cluster = rados.Rados(conffile=stack["ceph"]["conf"], rados_id="cacheraw",
                          conf={"keyring": user["keyring"]})
    cluster.connect(timeout=15)
    return cluster


@contextlib.contextmanager
def pools_as_cacheraw(stack, names):
    """The named pools, each an ioctx of one connection as the cacheraw user."""
    conn = connect_as_cacheraw(stack)
    pools = {name: conn.open_ioctx(name) for name in names}
    try:
        yield pools
    finally:
        for ioctx in pools.values():
            ioctx.close()
        conn.shutdown()


@pytest.fixture(scope="session")
def ceph(stack):
    """A connection to the cluster as the restricted cacheraw user, and the images pool."""
    cluster = connect_as_cacheraw(stack)
    ioctx = cluster.open_ioctx(stack["ceph"]["pool"])
    yield ioctx
    ioctx.close()
    cluster.shutdown()


def make_qcow2(path, size="64M", writes=(("0x5a", "0", "4M"), ("0xa5", "32M", "1M")), extra=()):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size],
                   check=True, timeout=30)
    for pattern, offset, length in writes:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P %s %s %s" % (pattern, offset, length), str(path)],
                       check=True, timeout=30, capture_output=True)
    return path


@pytest.fixture
def qcow2(tmp_path):
    return make_qcow2(tmp_path / "disk.qcow2")


@pytest.fixture
def notifications(stack):
    """The image service's notifications, heard from before the test acts (its queue is bound)."""
    with Listener(stack["rabbitmq"]["transport_url"]) as listener:
        yield listener


class WorkerProcess:
    """cacheraw-worker run as a subprocess against the stack, its log collected."""

    def __init__(self, config_file, log_path, extra_args=(), env=None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "cacheraw-worker"), "--config-file", str(config_file), *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, **env) if env else None,
            # A session of its own: a worker stopped by a test (SIGSTOP) stays stopped. In the
            # tests' process group, the kernel would continue it (SIGHUP, SIGCONT) as soon as
            # an exit elsewhere left that group orphaned with a stopped member.
            start_new_session=True)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_for_log(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError("worker log has no %r after %ss:\n%s" % (text, timeout, self.log()))

    def stop(self, sig=None, timeout=60):
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def module_worker(stack, tmp_path_factory):
    """One worker for the tests of a module, on a notification pool of its own, sweeping often."""
    tmp = tmp_path_factory.mktemp("module-worker")
    override = tmp / "override.conf"
    override.write_text("[notifications]\npool = tests-%s\n%s" % (uuid.uuid4().hex[:12], FAST))
    proc = WorkerProcess(stack["cacheraw_conf"], tmp / "worker.log",
                         ("--config-file", str(override)))
    proc.wait_for_log("started", timeout=30)
    yield proc
    proc.stop()


@pytest.fixture
def start_worker(stack, tmp_path):
    workers = []

    default_pool = "tests-%s" % uuid.uuid4().hex[:12]

    def start(name="worker", pool=None, extra_conf="", extra_args=(), env=None):
        """Start a worker with a notification pool of this test's own (unless named), with
        ``env`` added to its environment."""
        override = tmp_path / ("%s-%d.conf" % (name, len(workers)))
        override.write_text("[notifications]\npool = %s\n%s" % (pool or default_pool, extra_conf))
        worker = WorkerProcess(stack["cacheraw_conf"],
                               tmp_path / ("%s-%d.log" % (name, len(workers))),
                               ("--config-file", str(override), *extra_args), env)
        workers.append(worker)
        worker.wait_for_log("started", timeout=30)
        return worker

    yield start
    for worker in workers:
        worker.stop()


# -- outages of stack services (tools/stack/stack.py stop-service / start-service)

def stack_cmd(*args):
    done = subprocess.run([sys.executable, str(TOP / "tools/stack/stack.py"), *args],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def outage():
    """outage(service) stops a stack service; outage.start(service) starts it again; whatever
    is still stopped at the end of the test is started."""
    stopped = []

    def stop(service):
        stack_cmd("stop-service", service)
        stopped.append(service)

    def start(service):
        stack_cmd("start-service", service)
        stopped.remove(service)

    stop.start = start
    yield stop
    for service in list(stopped):
        stack_cmd("start-service", service)


# -- the pool's quota, set as the admin

def set_quota(admin_cluster, max_bytes):
    ret, _, err = admin_cluster.mon_command(json.dumps({
        "prefix": "osd pool set-quota", "pool": "images", "field": "max_bytes",
        "val": str(max_bytes)}), b"", timeout=20)
    assert ret == 0, err


@pytest.fixture
def admin_cluster(stack):
    """client.admin's cluster handle; the images pool has no quota again afterwards."""
    import rados
    cluster = rados.Rados(conffile=stack["ceph"]["conf"], rados_id="admin")
    cluster.connect(timeout=15)
    yield cluster
    set_quota(cluster, 0)
    cluster.shutdown()


def settled_usage(ioctx, quiet=6, timeout=60):
    """The pool's byte count once the monitors' statistics stopped moving (they lag writes and
    deletes by a few seconds)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        used = ioctx.get_stats()["num_bytes"]
        if used != last:
            last, since = used, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return used
        time.sleep(0.5)
    raise AssertionError("pool usage did not settle in %ss" % timeout)
