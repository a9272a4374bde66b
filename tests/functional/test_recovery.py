"""Nothing lost: stops, crashes, missed events, vanished caches, orphans (the faults suite has
the outages, kills at each point and the full pool)."""

import signal
import time
import uuid

import rbd

from tests.functional.helpers import FAST
from tests.functional.helpers import conversions
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import slow_qemu_img
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until_handled






def wait_gone(ioctx, name, timeout=30):
    deadline = time.monotonic() + timeout
    while name in names_in_pool(ioctx):
        assert time.monotonic() < deadline, "%s still in the pool after %ss" % (name, timeout)
        time.sleep(0.3)


def test_first_sigterm_requeues_an_unfinished_conversion(start_worker, demo_images, qcow2, ceph,
                                                         tmp_path):
    slow = start_worker(name="slow", extra_conf=FAST + "[worker]\nshutdown_timeout = 1\n"
                        "[converter]\nqemu_img = %s\n" % slow_qemu_img(tmp_path))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    slow.wait_for_log("caching")
    began = time.monotonic()
    assert slow.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - began < 20
    assert "stopped" in slow.log()
    assert demo_images.get(image["id"])["cache_raw_status"] == "Queued"
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    start_worker(name="next", extra_conf=FAST)
    wait_status(demo_images, image["id"], "Cached")


def test_events_missed_while_no_worker_ran_are_caught_up(start_worker, demo_images, qcow2):
    image = upload(demo_images, qcow2, cache_raw="True")
    time.sleep(1)
    assert "cache_raw_status" not in demo_images.get(image["id"])
    start_worker(extra_conf=FAST)  # a new notification pool: it never saw the upload
    wait_status(demo_images, image["id"], "Cached")


def test_cached_image_whose_cache_vanished_is_cached_again(start_worker, demo_images, qcow2,
                                                          ceph, notifications):
    worker = start_worker(extra_conf=FAST)
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    # The notifications of the worker's own updates are handled before the cache goes.
    wait_until_handled(notifications, [worker], [image["id"]], status="Cached")
    name = image["id"] + "_raw"
    with rbd.Image(ceph, name) as cache:
        cache.unprotect_snap("snap")
        cache.remove_snap("snap")
    rbd.RBD().remove(ceph, name)
    worker.wait_for_log("Cached but its cache is missing", timeout=30)
    deadline = time.monotonic() + 30
    while conversions(worker.log(), image["id"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert wait_status(demo_images, image["id"], "Cached")
    with rbd.Image(ceph, name, read_only=True) as cache:
        assert cache.is_protected_snap("snap")


def test_cache_of_an_image_deleted_while_no_worker_ran_is_removed(start_worker, demo_images,
                                                                 qcow2, ceph):
    first = start_worker(name="first", extra_conf=FAST)
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    first.stop()
    demo_images.delete(image["id"])
    assert image["id"] + "_raw" in names_in_pool(ceph)
    later = start_worker(name="later", pool="tests-%s" % uuid.uuid4().hex, extra_conf=FAST)
    wait_gone(ceph, image["id"] + "_raw")
    later.wait_for_log("orphaned cache")


def test_second_sigterm_stops_at_once_and_the_next_worker_recovers(start_worker, demo_images,
                                                                  qcow2, ceph, tmp_path):
    slow = start_worker(name="slow", extra_conf=FAST + "[worker]\nshutdown_timeout = 300\n"
                        "[converter]\nqemu_img = %s\n" % slow_qemu_img(tmp_path))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    slow.wait_for_log("caching")
    slow.proc.send_signal(signal.SIGTERM)
    slow.wait_for_log("Signal 15: stopping")
    began = time.monotonic()
    slow.proc.send_signal(signal.SIGTERM)
    slow.proc.wait(timeout=10)
    assert time.monotonic() - began < 5
    assert "stopping at once" in slow.log()
    start_worker(name="next", extra_conf=FAST)
    wait_status(demo_images, image["id"], "Cached", timeout=90)
    with rbd.Image(ceph, image["id"] + "_raw", read_only=True) as cache:
        assert cache.is_protected_snap("snap")
