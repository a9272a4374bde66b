"""Fault injection on the real stack: crashes at exact points, outages of Ceph, RabbitMQ and the
image API, workers that are not running, a full pool, racing workers and operators, deletes.

Every test ends with every requested image Cached and converted exactly once (the workers' and
cacheraw-manage's "converted to RAW" lines), and nothing left behind in the pool: no ``_raw``
image whose image is gone, no trashed cache without clones, no conversion lock object.

The crash points are hit from outside the product, with only what an operator could configure:
``[converter] qemu_img`` names a wrapper around the real qemu-img that rate-limits the conversion
(killed while qemu-img writes), or kills its parent, the worker, the moment qemu-img succeeded
(converted, not yet snapshotted); a stopped image API holds the worker between protecting the
snapshot and recording Cached. No test-only switch exists in the product to be left on by mistake.
"""

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
import rbd

from tests.functional.conftest import make_qcow2
from tests.functional.conftest import set_quota
from tests.functional.conftest import settled_usage
from tests.functional.helpers import FAST
from tests.functional.helpers import assert_cache_matches
from tests.functional.helpers import assert_cached_once
from tests.functional.helpers import assert_no_garbage
from tests.functional.helpers import conversions
from tests.functional.helpers import converter_conf
from tests.functional.helpers import manage
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import qemu_img_running_for
from tests.functional.helpers import qemu_img_wrapper
from tests.functional.helpers import raw_of
from tests.functional.helpers import read_rbd
from tests.functional.helpers import throttled_qemu_img
from tests.functional.helpers import upload
from tests.functional.helpers import wait_for_sweeps
from tests.functional.helpers import wait_for_written_data
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until
from tests.functional.helpers import wait_until_handled

pytestmark = pytest.mark.faults

QUICK_RETRIES = ("[worker]\nsweep_interval = 2\nretry_attempts = 2\nretry_initial_delay = 0.5\n"
                 "retry_max_delay = 1\n[ceph]\nlock_duration = 10\n")


# -- the stack and the pool


def all_logs(*workers):
    return "".join(w.log() for w in workers)


# -- qemu-img wrappers: a real conversion, slowed down or followed by a crash


def finished_then_stalled_qemu_img(tmp_path):
    """The real conversion, then a pause before qemu-img ends, so that the test can SIGKILL the
    worker before it snapshots the cache (qemu-img itself, in its sandbox, cannot signal it)."""
    return qemu_img_wrapper(tmp_path, "stalled-qemu-img",
                            "qemu-img convert \"$@\" && sleep 60\nexit 1")


def paused_qemu_img(tmp_path, seconds):
    return qemu_img_wrapper(tmp_path, "paused-qemu-img",
                            "sleep %d\nexec qemu-img convert \"$@\"" % seconds)


# -- 1. the worker killed at three points

def kill_during_qemu_img(start_worker, demo_images, ceph, qcow2, tmp_path, outage):
    worker = start_worker(name="doomed", extra_conf=converter_conf(FAST,
                                                                  throttled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_for_written_data(ceph, image["id"] + "_raw")
    assert qemu_img_running_for(image["id"])
    worker.stop(signal.SIGKILL)
    wait_until("the worker's qemu-img dying with it",
               lambda: not qemu_img_running_for(image["id"]), 10)
    with rbd.Image(ceph, image["id"] + "_raw", read_only=True) as cache:
        assert list(cache.list_snaps()) == []
    return image, worker


def kill_after_conversion(start_worker, demo_images, ceph, qcow2, tmp_path, outage):
    worker = start_worker(name="doomed", extra_conf=converter_conf(
        FAST, finished_then_stalled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, cache_raw="True")
    expected = raw_of(qcow2, tmp_path)
    wait_until("qemu-img done writing",
               lambda: image["id"] + "_raw" in names_in_pool(ceph) and
               read_rbd(ceph, image["id"] + "_raw") == expected, 60)
    worker.stop(signal.SIGKILL)
    # Converted in full, never snapshotted: a partial cache by the rule.
    assert read_rbd(ceph, image["id"] + "_raw") == raw_of(qcow2, tmp_path)
    with rbd.Image(ceph, image["id"] + "_raw", read_only=True) as cache:
        assert list(cache.list_snaps()) == []
    assert demo_images.get(image["id"])["cache_raw_status"] == "Caching"
    worker.stop()
    return image, worker


def kill_after_protection(start_worker, demo_images, ceph, qcow2, tmp_path, outage):
    worker = start_worker(name="doomed", extra_conf=converter_conf(FAST,
                                                                  paused_qemu_img(tmp_path, 3)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    outage("glance")  # the worker cannot record Cached: it retries, then dies
    worker.wait_for_log("Image %s: converted to RAW" % image["id"], timeout=60)
    with rbd.Image(ceph, image["id"] + "_raw", read_only=True) as cache:
        assert cache.is_protected_snap("snap")
    worker.stop(signal.SIGKILL)
    outage.start("glance")
    assert demo_images.get(image["id"])["cache_raw_status"] == "Caching"
    return image, worker


@pytest.mark.parametrize("crash", [kill_during_qemu_img, kill_after_conversion,
                                   kill_after_protection])
def test_worker_killed_at_each_point_recovers(crash, start_worker, demo_images, service_images,
                                              ceph, qcow2, tmp_path, outage):
    image, doomed = crash(start_worker, demo_images, ceph, qcow2, tmp_path, outage)
    # Started again: its start-up sweep finds the image Caching, waits for the dead worker's
    # lock to expire, and finishes the work.
    again = start_worker(name="again", extra_conf=FAST)
    wait_status(demo_images, image["id"], "Cached", timeout=120)
    assert_cached_once(demo_images, [image["id"]], all_logs(doomed, again))
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


# -- 2. the OSD stopped in the middle of a conversion

def test_osd_stopped_mid_conversion(stack, start_worker, demo_images, service_images, ceph,
                                    qcow2, tmp_path, outage):
    assert stack["ceph"].get("objectstore") == "bluestore", (
        "the OSD outage needs the stack on bluestore (CACHERAW_STACK_OSD=bluestore)")
    # The default lock duration: its lease outlives an outage of 20 s and the OSD's restart
    # (renewals every 10 s, each waiting at most 5 s; two may fail in a row).
    worker = start_worker(extra_conf=converter_conf(
        "[worker]\nsweep_interval = 2\n[ceph]\nlock_duration = 60\n",
        throttled_qemu_img(tmp_path, 512 * 1024)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_for_written_data(ceph, image["id"] + "_raw")
    outage("ceph-osd")
    time.sleep(20)  # the outage itself
    outage.start("ceph-osd")
    wait_status(demo_images, image["id"], "Cached", timeout=180)
    assert worker.proc.poll() is None
    assert_cached_once(demo_images, [image["id"]], worker.log())
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


# -- 2b. a Ceph read failing under qemu-img info, the OSD back before qemu-img ends

# qemu-img info, the first time: waits (in its sandbox, on the folder of the NBD sockets) until
# the test has stopped the OSD, reads the image (the worker's reads time out), and ends only once
# the test has started the OSD again and read from the pool; the test then puts a plain
# qemu-img in its place for the retry.
OUTAGE_INFO = """#!/bin/sh
if [ "$1" = info ]; then
  while [ ! -e /run/cacheraw/osd-down ]; do sleep 0.2; done
  qemu-img "$@"; rc=$?
  while [ ! -e /run/cacheraw/osd-back ]; do sleep 0.2; done
  exit $rc
fi
exec qemu-img "$@"
"""


def replace_file(path, text):
    """Write ``path`` anew (a qemu-img running from the old file goes on with it)."""
    new = path.with_suffix(".new")
    new.write_text(text)
    new.chmod(0o755)
    os.replace(new, path)


def pids(*pgrep_args):
    done = subprocess.run(["pgrep", *pgrep_args], capture_output=True, text=True)
    return done.stdout.split()


def info_reading(wrapper):
    """Whether the wrapper's qemu-img info runs the real one now."""
    return any(pids("-P", pid, "-x", "qemu-img") for pid in pids("-f", "^/bin/sh %s info"
                                                                  % wrapper))


def test_a_ceph_read_failing_under_qemu_img_info_is_retried_after_the_outage(
        stack, start_worker, demo_images, service_images, ceph, qcow2, tmp_path, outage):
    """qemu-img info fails because the worker's own reads of the image timed out (the OSD is
    stopped; [ceph] op_timeout 5 s), and the cluster answers again before qemu-img has ended: a
    temporary failure, retried and Cached, never an Error that waits for an operator."""
    wrapper = tmp_path / "outage-qemu-img"
    replace_file(wrapper, OUTAGE_INFO)
    worker = start_worker(extra_conf=converter_conf(
        "[worker]\nsweep_interval = 2\nerror_retry_delay = 1\n"
        "[ceph]\nlock_duration = 60\nop_timeout = 5\n", wrapper))
    image = upload(demo_images, qcow2, cache_raw="True")
    sockets = os.path.join(stack["state_dir"], "cacheraw", "conversions", image["id"] + ".nbd")
    wait_until("qemu-img info started", lambda: pids("-f", "^/bin/sh %s info" % wrapper), 60)
    outage("ceph-osd")
    open(os.path.join(sockets, "osd-down"), "w").close()
    wait_until("qemu-img info reading", lambda: info_reading(wrapper), 10)
    wait_until("qemu-img info failed", lambda: not info_reading(wrapper), 60)
    outage.start("ceph-osd")
    read_rbd(ceph, image["id"], "snap")  # the cluster answers again
    replace_file(wrapper, "#!/bin/sh\nexec qemu-img \"$@\"\n")
    open(os.path.join(sockets, "osd-back"), "w").close()
    wait_status(demo_images, image["id"], "Cached", timeout=180)
    assert "caching failed: temporary failure (attempt 1 of 5): Ceph failed the worker's reads " \
        "of the image under qemu-img: qemu-img info failed" in worker.log()
    assert_cached_once(demo_images, [image["id"]], worker.log())
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


# -- 3. RabbitMQ restarted while the worker is idle

def test_rabbitmq_restart_while_idle(start_worker, demo_images, service_images, ceph, qcow2,
                                     outage):
    # No periodic sweep: only a notification can bring the image in.
    worker = start_worker(extra_conf="[worker]\nsweep_interval = 0\n")
    worker.wait_for_log("Sweep:")
    outage("rabbitmq")
    time.sleep(2)
    outage.start("rabbitmq")
    worker.wait_for_log("Reconnected to AMQP server", timeout=90)  # by itself
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached", timeout=90)
    assert worker.proc.poll() is None
    assert_cached_once(demo_images, [image["id"]], worker.log())
    assert_no_garbage(ceph, service_images)


# -- 4. uploads while no worker runs

def test_uploads_while_no_worker_runs_are_all_cached(start_worker, demo_images, service_images,
                                                     ceph, tmp_path, notifications):
    pool = "tests-%s" % uuid.uuid4().hex[:12]
    first = start_worker(name="first", pool=pool, extra_conf=FAST)
    first.stop()
    ids = []
    for n in range(4):
        path = make_qcow2(tmp_path / ("d%d.qcow2" % n), size="16M",
                          writes=(("0x%02x" % (n + 1), "0", "1M"),))
        ids.append(upload(demo_images, path, cache_raw="True")["id"])
    for image_id in ids:
        assert "cache_raw_status" not in demo_images.get(image_id)
    # The notifications waited in the pool's queue; the start-up sweep finds the images too.
    later = start_worker(name="later", pool=pool, extra_conf=FAST)
    for image_id in ids:
        wait_status(demo_images, image_id, "Cached", timeout=90)
    # The worker has handled every event up to each image's Cached, and swept once more since:
    # nothing is converted again.
    wait_until_handled(notifications, [first, later], ids, status="Cached")
    wait_for_sweeps(later)
    assert_cached_once(demo_images, ids, all_logs(first, later))
    assert_no_garbage(ceph, service_images)


# -- 5. the image API down when the worker records Cached

def test_image_api_down_when_recording_cached(start_worker, demo_images, service_images, ceph,
                                              qcow2, tmp_path, outage):
    worker = start_worker(extra_conf=converter_conf(QUICK_RETRIES, paused_qemu_img(tmp_path, 3)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    outage("glance")
    stopped = time.monotonic()
    worker.wait_for_log("Image %s: converted to RAW" % image["id"], timeout=60)
    worker.wait_for_log("caching failed", timeout=60)  # converted; Glance is not there to hear
    time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
    outage.start("glance")
    wait_status(demo_images, image["id"], "Cached", timeout=90)
    log = worker.log()
    assert "Image %s: found a finished cache" % image["id"] in log
    assert worker.proc.poll() is None
    assert_cached_once(demo_images, [image["id"]], log)
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


# -- 6. the pool full


def test_pool_full_errors_cleanly_then_recache_succeeds(stack, start_worker, demo_images,
                                                        service_images, ceph, tmp_path,
                                                        admin_cluster, notifications):
    # Far more data than the pool's statistics can drift by (they lag deletes by up to ~15 s).
    qcow2 = make_qcow2(tmp_path / "big.qcow2", writes=(("0x5a", "0", "48M"),))
    image = upload(demo_images, qcow2, cache_raw="True")
    set_quota(admin_cluster, settled_usage(ceph) + (1 << 20))
    started = time.monotonic()
    worker = start_worker(extra_conf=FAST)
    failed = wait_status(demo_images, image["id"], "Error")
    assert failed["cache_raw_error"].startswith("not enough space in pool images: need ")
    assert ", have " in failed["cache_raw_error"]
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    assert_no_garbage(ceph, service_images)
    set_quota(admin_cluster, 0)  # space freed
    manage_log = tmp_path / "manage.log"
    done = manage(stack, "recache", image["id"], log_file=manage_log)
    assert done.returncode == 0, done.stdout + done.stderr
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"
    assert "cache_raw_error" not in demo_images.get(image["id"])
    # The worker has handled the events of the recache, and swept once more: it must not
    # convert again.
    wait_until_handled(notifications, [worker], [image["id"]], status="Cached", since=started)
    wait_for_sweeps(worker)
    assert_cached_once(demo_images, [image["id"]], worker.log() + manage_log.read_text())
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


def test_pool_filling_up_during_a_conversion_fails_it_then_recovers(
        stack, start_worker, demo_images, service_images, ceph, tmp_path, admin_cluster):
    """The space check passed, then the pool filled up under qemu-img: its writes time out (our
    Ceph timeouts reach its own Ceph client) instead of blocking until its wall-clock limit; the
    worker lives on and, once space is freed, caches the image exactly once."""
    qcow2 = make_qcow2(tmp_path / "big.qcow2", writes=(("0x5a", "0", "48M"),))
    worker = start_worker(extra_conf=converter_conf(
        QUICK_RETRIES + "[ceph]\nop_timeout = 10\n[worker]\nerror_retry_delay = 1\n",
        throttled_qemu_img(tmp_path, 1024 * 1024)))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_for_written_data(ceph, image["id"] + "_raw")
    set_quota(admin_cluster, 1)  # the pool is full from now on
    # qemu-img's writes time out, or (first) the lock's renewals, which are writes too: the
    # worker cannot prove it holds the lease any more and stops its qemu-img.
    wait_until("the conversion failing",
               lambda: any(text in worker.log() for text in ("qemu-img convert failed",
                                                             "lost its conversion lock")), 90)
    wait_until("qemu-img giving up", lambda: not qemu_img_running_for(image["id"]), 30)
    assert worker.proc.poll() is None
    assert "converted to RAW" not in worker.log()
    set_quota(admin_cluster, 0)  # space freed
    wait_status(demo_images, image["id"], "Cached", timeout=240)
    assert_cached_once(demo_images, [image["id"]], worker.log())
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert_no_garbage(ceph, service_images)


# -- 7. three workers, thirty uploads, operators re-caching at the same time

def recache_has_force(stack):
    """Whether 'recache' without --force leaves a valid cache alone (then it converts only
    with --force) or always converts again."""
    return "--force" in manage(stack, "recache", "--help", timeout=60).stdout


def test_three_workers_thirty_uploads_and_racing_recaches(stack, start_worker, demo_images,
                                                          service_images, ceph, tmp_path,
                                                          notifications):
    pool = "tests-shared-%s" % uuid.uuid4().hex[:8]
    workers = [start_worker(name="w%d" % n, pool=pool, extra_conf=FAST) for n in range(3)]
    recached = set()
    racers = []

    def recache(image_id):
        manage(stack, "recache", image_id, log_file=tmp_path / ("manage-%s.log" % image_id))

    ids = []
    for n in range(30):
        path = make_qcow2(tmp_path / ("d%d.qcow2" % n), size="8M",
                          writes=(("0x%02x" % (n + 1), "0", "256K"),))
        ids.append(upload(demo_images, path, cache_raw="True")["id"])
        if n % 3 == 0:  # an operator re-caches an image the workers are busy with
            recached.add(ids[-1])
            racers.append(threading.Thread(target=recache, args=(ids[-1],)))
            racers[-1].start()
    for racer in racers:
        racer.join(240)
    for image_id in ids:
        wait_status(demo_images, image_id, "Cached", timeout=180)
    # Every event up to each image's Cached is handled, and every worker swept once more since:
    # nothing more is converted.
    wait_until_handled(notifications, workers, ids, status="Cached")
    wait_for_sweeps(*workers)
    logs = all_logs(*workers) + "".join(p.read_text() for p in tmp_path.glob("manage-*.log"))
    # recache converts a valid cache again only where it always forces.
    extra = 0 if recache_has_force(stack) else 1
    for image_id in ids:
        image = demo_images.get(image_id)
        assert image.get("cache_raw_status") == "Cached", image
        count = conversions(logs, image_id)
        assert 1 <= count <= 1 + (extra if image_id in recached else 0), (image_id, count)
        with rbd.Image(ceph, image_id + "_raw", read_only=True) as cache:
            assert cache.is_protected_snap("snap")
    assert all(w.proc.poll() is None for w in workers)
    assert_no_garbage(ceph, service_images)


# -- 8. an image deleted while it is converted

def test_image_deleted_mid_conversion_stops_it_and_leaves_nothing(stack, start_worker,
                                                                  demo_images, service_images,
                                                                  ceph, qcow2, tmp_path):
    # Data in the file store: the worker converts a verified download, and Glance can delete
    # the image at any moment (see the next test for data in Ceph).
    worker = start_worker(extra_conf=converter_conf(FAST, throttled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, headers={"X-Image-Meta-Store": "local"},
                   cache_raw="True")
    name = image["id"] + "_raw"
    wait_for_written_data(ceph, name)
    demo_images.delete(image["id"])
    worker.wait_for_log("Image %s: stopping its conversion" % image["id"])
    # At once: not after the killed qemu-img's watch on the cache times out (30 s).
    wait_until("the cache removed", lambda: name not in names_in_pool(ceph), 15)
    wait_until("qemu-img killed", lambda: not qemu_img_running_for(image["id"]), 10)
    conversion_dir = os.path.join(stack["state_dir"], "cacheraw", "conversions")
    wait_until("the download removed", lambda: not os.listdir(conversion_dir), 10)
    assert conversions(worker.log(), image["id"]) == 0
    assert worker.proc.poll() is None
    assert_no_garbage(ceph, service_images)
    # The worker goes on with the next image.
    other = upload(demo_images, make_qcow2(tmp_path / "next.qcow2", size="8M",
                                           writes=(("0x11", "0", "256K"),)), cache_raw="True")
    wait_status(demo_images, other["id"], "Cached", timeout=90)
    assert_cached_once(demo_images, [other["id"]], worker.log())
    assert_no_garbage(ceph, service_images)


def test_snapshot_removed_under_a_served_image_is_never_cached(
        start_worker, demo_images, service_images, ceph, qcow2, tmp_path, admin_cluster):
    """Glance deletes an image's snapshot first, its image after: from then on the worker's
    read-only handle may read zeros while the image's header is still there. The worker asks
    for the snapshot itself, so that a partly-zero cache is never recorded Cached."""
    worker = start_worker(extra_conf=converter_conf(FAST, throttled_qemu_img(tmp_path)))
    image = upload(demo_images, qcow2, cache_raw="True")
    name = image["id"] + "_raw"
    wait_for_written_data(ceph, name)
    with admin_cluster.open_ioctx("images") as ioctx:
        with rbd.Image(ioctx, image["id"]) as source:
            source.unprotect_snap("snap")
            source.remove_snap("snap")
    failed = wait_status(demo_images, image["id"], "Error", timeout=90)
    assert "missing from pool" in failed["cache_raw_error"], failed
    wait_until("the cache removed", lambda: name not in names_in_pool(ceph))
    wait_until("qemu-img ended", lambda: not qemu_img_running_for(image["id"]), 10)
    assert conversions(worker.log(), image["id"]) == 0
    assert worker.proc.poll() is None
    assert_no_garbage(ceph, service_images)
