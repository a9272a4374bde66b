"""Fencing and hardening on the real stack: a worker acts on an image only while it can prove it
holds the image's lease; a forged delete removes nothing; a blocklisted worker exits for systemd
to restart it; memory stays bounded under a qemu-img map bomb; a refused status write ends in a
recorded Error; leftovers of a dead worker are cleaned at start.

The workers run with a short lock duration so that leases run out within seconds.
"""

import json
import os
import re
import signal
import threading
import time
import uuid

import pytest
import rbd

from tests.functional.conftest import make_qcow2
from tests.functional.conftest import stack_cmd
from tests.functional.helpers import assert_cache_matches
from tests.functional.helpers import assert_no_garbage
from tests.functional.helpers import conversions
from tests.functional.helpers import converter_conf
from tests.functional.helpers import forged_notifier
from tests.functional.helpers import map_bomb_qcow2
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import openstack
from tests.functional.helpers import qemu_img_running_for
from tests.functional.helpers import throttled_qemu_img
from tests.functional.helpers import upload
from tests.functional.helpers import wait_for_written_data
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_for_sweeps
from tests.functional.helpers import wait_until
from tests.functional.helpers import wait_until_handled
from tests.functional.helpers import worker_usage

pytestmark = pytest.mark.faults

LOCK_DURATION = 10
FAST = "[worker]\nsweep_interval = 2\n[ceph]\nlock_duration = %d\n" % LOCK_DURATION
WORKER_MAX_RSS = 200 * 1024 * 1024


class StatusWatch:
    """Every cache_raw_status an image shows, polled in the background."""

    def __init__(self, images, image_id):
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(images, image_id), daemon=True)
        self._thread.start()

    def _poll(self, images, image_id):
        while not self._stop.wait(0.3):
            try:
                status = images.get(image_id).get("cache_raw_status")
            except Exception:  # noqa: BLE001 - a failed poll is only a missed sample
                continue
            if not self.seen or self.seen[-1] != status:
                self.seen.append(status)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.seen


def test_a_stalled_worker_wakes_up_and_touches_nothing(start_worker, demo_images, ceph,
                                                       admin_cluster, tmp_path):
    """A converts slowly; SIGSTOP holds it past its lease; B takes the image (blocklisting A
    first), converts and records Cached; A resumes: it removes or writes nothing, and exits
    with status 1 for its restart."""
    qcow2 = make_qcow2(tmp_path / "big.qcow2", size="96M",
                       writes=(("0x5a", "0", "8M"), ("0xa5", "40M", "8M")))
    stalled = start_worker(name="stalled", pool="tests-stalled-%s" % uuid.uuid4().hex[:8],
                           extra_conf=converter_conf(FAST, throttled_qemu_img(tmp_path)))
    address = client_address(stalled)
    image = upload(demo_images, qcow2, cache_raw="True")
    watch = StatusWatch(demo_images, image["id"])
    wait_for_written_data(ceph, image["id"] + "_raw")
    stalled.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(LOCK_DURATION + 1)
        rescuer = start_worker(name="rescuer", extra_conf=FAST)
        wait_status(demo_images, image["id"], "Cached", timeout=120)
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    try:
        assert stalled.proc.wait(timeout=90) == 1, stalled.log()[-3000:]
    finally:
        blocklist(admin_cluster, "rm", address)
    assert "blocklisted" in stalled.log()
    assert watch.stop()[-1] == "Cached"
    assert "Error" not in watch.seen, watch.seen
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert conversions(rescuer.log(), image["id"]) == 1
    assert conversions(stalled.log(), image["id"]) == 0
    assert "cache removed" not in stalled.log()


def test_a_forged_delete_of_a_live_image_removes_nothing(start_worker, demo_images, ceph,
                                                         stack, tmp_path):
    worker = start_worker(extra_conf=FAST)
    image = upload(demo_images, make_qcow2(tmp_path / "live.qcow2", size="8M",
                                       writes=(("0x22", "0", "1M"),)),
                   cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    notifier, transport = forged_notifier(stack["rabbitmq"]["transport_url"], "glance")
    try:
        for _ in range(3):
            notifier.info({}, "image.delete", {"id": image["id"], "deleted": True,
                                               "status": "deleted"})
    finally:
        transport.cleanup()
    wait_until("the three forged deletes handled",
               lambda: worker.log().count("Image %s: ignoring image.delete" % image["id"]) == 3)
    with rbd.Image(ceph, image["id"] + "_raw", read_only=True) as cache:
        assert cache.is_protected_snap("snap")
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"


def client_address(worker):
    match = re.search(r"Connected to Ceph as client\.\d+ from \S*?(\d+\.\d+\.\d+\.\d+:\d+/\d+)",
                      worker.log())
    assert match, worker.log()
    return match.group(1)


def mon(admin, **command):
    ret, out, err = admin.mon_command(json.dumps(dict(command, format="json")), b"", timeout=30)
    assert ret == 0, err
    return out


def blocklist(admin, op, address):
    mon(admin, prefix="osd blocklist", blocklistop=op, addr=address)


def blocklisted(admin):
    # The answer is the list of addresses followed by the list of ranges.
    entries, _ = json.JSONDecoder().raw_decode(mon(admin, prefix="osd blocklist ls").decode())
    return [entry["addr"] for entry in entries]


def test_a_blocklisted_worker_exits_for_its_restart(start_worker, demo_images, tmp_path,
                                                    admin_cluster):
    worker = start_worker(extra_conf=FAST)
    address = client_address(worker)
    blocklist(admin_cluster, "add", address)
    try:
        worker.proc.wait(timeout=60)
    finally:
        blocklist(admin_cluster, "rm", address)
    assert worker.proc.returncode == 1, worker.log()[-3000:]
    assert "blocklisted" in worker.log()


def test_deletes_during_conversions_never_blocklist_the_worker(start_worker, demo_images,
                                                               service_images, ceph, tmp_path,
                                                               admin_cluster, notifications):
    """Deletes of images in conversion (and the sweep's orphan removal) while the same worker
    publishes others: no client of the worker is ever blocklisted; the next upload is cached."""
    worker = start_worker(extra_conf=FAST)
    address = client_address(worker)
    qcow2 = make_qcow2(tmp_path / "small.qcow2", size="16M", writes=(("0x11", "0", "2M"),))
    deleted = []
    for _ in range(6):
        image = upload(demo_images, qcow2, headers={"X-Image-Meta-Store": "local"},
                       cache_raw="True")
        time.sleep(0.3)
        demo_images.delete(image["id"], raise_exc=False)
        deleted.append(image["id"])
    # Every delete is handled, every conversion of those images over, and a whole sweep (its
    # removal of orphaned caches) ended since.
    wait_until_handled(notifications, [worker], deleted, event="image.delete")
    wait_until("the conversions of the deleted images ending",
               lambda: not any(qemu_img_running_for(image_id) for image_id in deleted), 60)
    wait_for_sweeps(worker)
    assert address not in blocklisted(admin_cluster), address
    assert worker.proc.poll() is None
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")


def test_a_map_bomb_keeps_the_worker_small(start_worker, demo_images, tmp_path):
    """1 TiB virtual in 18 MiB, two million extents in qemu-img map's output: read one at a time
    and bounded, the worker's peak RSS stays under 200 MiB."""
    worker = start_worker(extra_conf=FAST + "[converter]\nmax_map_extents = 200000\n")
    path, disk_format, words = map_bomb_qcow2(tmp_path)
    image = upload(demo_images, path, cache_raw="True", disk_format=disk_format)
    failed = wait_status(demo_images, image["id"], "Error", timeout=180)
    assert words in failed["cache_raw_error"], failed
    peak, _ = worker_usage(worker)
    assert peak < WORKER_MAX_RSS, peak
    assert worker.proc.poll() is None


def test_leftovers_of_a_dead_worker_are_removed_at_start(start_worker, tmp_path):
    directory = tmp_path / "conversions"
    directory.mkdir()
    leftovers = [directory / ("%s.%s" % (uuid.uuid4(), suffix))
                 for suffix in ("download", "nbd", "key")]
    for path in leftovers:
        path.write_bytes(b"left by a worker that died")
    unrelated = directory / "notes.txt"
    unrelated.write_text("not ours")
    worker = start_worker(extra_conf=FAST + "[converter]\nconversion_dir = %s\n" % directory)
    assert not any(path.exists() for path in leftovers), worker.log()
    assert unrelated.exists()


@pytest.fixture
def property_quota(stack):
    """Glance restarted with image_property_quota = N (quota(N)); restored at the end."""
    from pathlib import Path
    conf = Path(stack["state_dir"]) / "glance" / "glance-api.conf"
    original = conf.read_text()

    def quota(limit):
        conf.write_text(original.replace("[DEFAULT]\n",
                                         "[DEFAULT]\nimage_property_quota = %d\n" % limit, 1))
        stack_cmd("stop-service", "glance")
        stack_cmd("start-service", "glance")

    yield quota
    conf.write_text(original)
    stack_cmd("stop-service", "glance")
    stack_cmd("start-service", "glance")


BASE_PROPERTIES = {"id", "name", "status", "visibility", "protected", "os_hidden", "checksum",
                   "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size",
                   "disk_format", "container_format", "created_at", "updated_at", "tags",
                   "direct_url", "min_ram", "min_disk", "self", "file", "schema", "locations",
                   "stores"}


def test_a_refused_status_write_ends_in_error_without_a_loop(start_worker, demo_images,
                                                            property_quota, tmp_path,
                                                            notifications):
    """Glance's property quota leaves room for store, Queued and Error but not for the URL and
    size of Cached: the finished cache is recorded as an Error once, never converted again."""
    qcow2 = make_qcow2(tmp_path / "quota.qcow2", size="8M", writes=(("0x33", "0", "1M"),))
    image = upload(demo_images, qcow2)
    extra = set(demo_images.get(image["id"])) - BASE_PROPERTIES
    property_quota(len(extra) + 4)  # + cache_raw, store, cache_raw_status, cache_raw_error
    started = time.monotonic()
    worker = start_worker(extra_conf=FAST)
    demo_images.patch(image["id"], [{"op": "add", "path": "/cache_raw", "value": "True"}])
    failed = wait_status(demo_images, image["id"], "Error", timeout=90)
    assert "refused to record the finished cache" in failed["cache_raw_error"], failed
    # The events since the worker started are handled, and three sweeps ended since.
    wait_until_handled(notifications, [worker], [image["id"]], status="Error", since=started)
    wait_for_sweeps(worker, count=3)
    assert demo_images.get(image["id"])["cache_raw_status"] == "Error"
    assert conversions(worker.log(), image["id"]) == 1
    assert worker.log().count("Image %s: caching\n" % image["id"]) == 1


def test_an_image_in_ceph_is_deleted_at_once_during_its_conversion(stack, start_worker,
                                                                   demo_images, service_images,
                                                                   ceph, tmp_path):
    """The image's data in Ceph is served to qemu-img from a read-only handle (no watch on it),
    so `openstack image delete` succeeds the first time while qemu-img converts; nothing is
    left."""
    worker = start_worker(extra_conf=converter_conf(FAST, throttled_qemu_img(tmp_path)))
    qcow2 = make_qcow2(tmp_path / "deleted.qcow2", size="96M",
                       writes=(("0x5a", "0", "8M"), ("0xa5", "64M", "8M")))
    image = upload(demo_images, qcow2, cache_raw="True")
    name = image["id"] + "_raw"
    wait_for_written_data(ceph, name)
    deleted = openstack("image", "delete", image["id"], check=False)
    assert deleted.returncode == 0, deleted.stderr  # the first time: no 409 "in use"
    assert "Image %s: serving rbd" % image["id"] in worker.log()
    wait_until("the cache removed", lambda: name not in names_in_pool(ceph), 15)
    wait_until("qemu-img killed", lambda: not qemu_img_running_for(image["id"]), 10)
    conversion_dir = os.path.join(stack["state_dir"], "cacheraw", "conversions")
    wait_until("the socket removed", lambda: not os.listdir(conversion_dir), 10)
    assert image["id"] not in names_in_pool(ceph)
    assert conversions(worker.log(), image["id"]) == 0
    assert worker.proc.poll() is None
    assert_no_garbage(ceph, service_images)


# -- fencing by Ceph: a worker stalled past its lease at each point where it could still act

FENCED = ("[worker]\nsweep_interval = 2\n[ceph]\nlock_duration = %d\nblocklist_expiry = 900\n"
          % LOCK_DURATION)


def is_stopped(proc):
    """True when the process is stopped (SIGSTOP): its state in /proc is T."""
    try:
        with open("/proc/%d/stat" % proc.pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def blocklist_until(admin):
    """{address: expiry} of `ceph osd blocklist ls`."""
    entries, _ = json.JSONDecoder().raw_decode(mon(admin, prefix="osd blocklist ls").decode())
    return {entry["addr"]: entry["until"] for entry in entries}


def protected_snaps(ceph, name):
    with rbd.Image(ceph, name, read_only=True) as cache:
        return [(s["name"], cache.is_protected_snap(s["name"])) for s in cache.list_snaps()]


def a_dead_holder(start_worker, demo_images, ceph, qcow2, tmp_path):
    """An image whose conversion a worker left half-written when it was killed, its lock
    still held until it expires."""
    dying = start_worker(name="dying", extra_conf=converter_conf(FENCED,
                                                                 throttled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_for_written_data(ceph, image["id"] + "_raw")
    dying.proc.kill()
    dying.proc.wait()
    wait_until("its qemu-img gone", lambda: not qemu_img_running_for(image["id"]), 30)
    return image


@pytest.mark.parametrize("point", ["before-publish", "in-publish", "in-removal",
                                   "before-cached"])
def test_a_worker_stalled_past_its_lease_is_blocklisted_by_the_next_holder(
        point, start_worker, demo_images, service_images, ceph, admin_cluster, tmp_path):
    """Three workers and a large image. The converting worker stops itself (SIGSTOP, the test
    hook CACHERAW_TEST_STALL_AT of cacheraw.stall) at ``point`` and stays stopped past its
    lease; one of the two others takes the lease over, blocklists it first, and caches the
    image; the stalled worker is resumed: its next Ceph request fails, it exits with status 1
    (what systemd restarts: Restart=on-failure), and a worker started again in its place runs.
    One protected snap with qemu-img convert's bytes, Cached, no Error ever, nothing left."""
    qcow2 = make_qcow2(tmp_path / "large.qcow2", size="512M",
                       writes=(("0x5a", "0", "24M"), ("0xa5", "200M", "24M"),
                               ("0x3c", "480M", "16M")))
    if point == "in-removal":  # the removal of a dead worker's partial cache
        image = a_dead_holder(start_worker, demo_images, ceph, qcow2, tmp_path)
    stalled = start_worker(name="stalled", extra_conf=FENCED,
                           env={"CACHERAW_TEST_STALL_AT": point})
    address = client_address(stalled)
    if point != "in-removal":
        image = upload(demo_images, qcow2, cache_raw="True")
    watch = StatusWatch(demo_images, image["id"])
    wait_until("the worker stopped at %s" % point, lambda: is_stopped(stalled.proc), 180)
    assert "Stall point %s" % point in stalled.log()
    try:
        rescuers = [start_worker(name="rescuer", extra_conf=FENCED) for _ in range(2)]
        wait_status(demo_images, image["id"], "Cached", timeout=240)
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    try:
        assert stalled.proc.wait(timeout=90) == 1, stalled.log()[-3000:]
        assert "blocklisted" in stalled.log()
        until = blocklist_until(admin_cluster).get(address)
        assert until, (address, blocklist_until(admin_cluster))
    finally:
        blocklist(admin_cluster, "rm", address)
    logs = "".join(w.log() for w in rescuers)
    assert "blocklisting that client for 900 s" in logs, logs
    restarted = start_worker(name="restarted", extra_conf=FENCED)
    assert restarted.proc.poll() is None
    assert watch.stop()[-1] == "Cached"
    assert "Error" not in watch.seen, watch.seen
    # What Conversion._record_error logs as it writes an Error.
    assert "caching failed: " not in logs + stalled.log() + restarted.log()
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"
    assert protected_snaps(ceph, image["id"] + "_raw") == [("snap", True)]
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)
