"""Pool space on the real stack: a cache is started only if the pool stays below the cluster's
nearfull ratio once it and every running conversion are written (ceph df's MAX AVAIL, not the
raw free space); a refused image is retried by the sweep once the pool has room for it."""

import json
import threading

import pytest

from tests.functional.conftest import make_qcow2
from tests.functional.conftest import set_quota
from tests.functional.conftest import settled_usage
from tests.functional.helpers import FAST
from tests.functional.helpers import assert_cache_matches
from tests.functional.helpers import assert_no_garbage
from tests.functional.helpers import compressed_qcow2
from tests.functional.helpers import conversions
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status

pytestmark = pytest.mark.faults

FULLNESS = ("OSD_NEARFULL", "OSD_FULL", "POOL_NEARFULL", "POOL_FULL", "OSD_BACKFILLFULL",
            "POOL_BACKFILLFULL")


def mon_json(admin, **command):
    ret, out, err = admin.mon_command(json.dumps(dict(command, format="json")), b"", timeout=30)
    assert ret == 0, err
    return json.loads(out)


class HealthWatch:
    """Every health check `ceph health` raises, polled in the background."""

    def __init__(self, admin):
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(admin,), daemon=True)
        self._thread.start()

    def _poll(self, admin):
        while not self._stop.wait(0.5):
            self.seen |= set(mon_json(admin, prefix="health").get("checks", {}))

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.seen


def test_an_image_of_90_percent_of_the_raw_free_space_is_refused_before_a_byte_is_written(
        start_worker, demo_images, service_images, ceph, admin_cluster, tmp_path):
    """No pool quota; a 13 MB qcow2 of compressed clusters whose data is 90% of the cluster's
    raw free space (which a check of the raw free space lets through) is refused with a clear
    Error, the cluster never reads nearfull or full, and an ordinary image is cached next."""
    free = mon_json(admin_cluster, prefix="df")["stats"]["total_avail_bytes"]
    bomb = compressed_qcow2(tmp_path / "expands.qcow2", free * 9 // 10)
    health = HealthWatch(admin_cluster)
    worker = start_worker(extra_conf=FAST)
    image = upload(demo_images, bomb, cache_raw="True")
    failed = wait_status(demo_images, image["id"], "Error", timeout=120)
    assert failed["cache_raw_error"].startswith("not enough space in pool images: need "), failed
    assert "limited by the nearfull ratio 0.85" in failed["cache_raw_error"], failed
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    qcow2 = make_qcow2(tmp_path / "ordinary.qcow2", size="64M", writes=(("0x11", "0", "8M"),))
    ordinary = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, ordinary["id"], "Cached", timeout=120)
    assert_cache_matches(ceph, ordinary["id"], qcow2, tmp_path)
    assert health.stop() & set(FULLNESS) == set()
    assert demo_images.get(image["id"])["cache_raw_status"] == "Error"
    assert conversions(worker.log(), image["id"]) == 0
    demo_images.delete(image["id"])
    demo_images.delete(ordinary["id"])
    assert_no_garbage(ceph, service_images)


def test_an_image_refused_for_space_is_cached_by_the_sweep_once_there_is_room(
        start_worker, demo_images, service_images, ceph, admin_cluster, tmp_path):
    # Far more data than the pool's statistics can drift by; the quota is set after the upload
    # (which writes into the pool), leaving room for the lock objects but not for the cache.
    qcow2 = make_qcow2(tmp_path / "big.qcow2", writes=(("0x5a", "0", "48M"),))
    image = upload(demo_images, qcow2, cache_raw="True")
    set_quota(admin_cluster, settled_usage(ceph) + (1 << 20))
    worker = start_worker(extra_conf=FAST)
    failed = wait_status(demo_images, image["id"], "Error")
    assert failed["cache_raw_error"].startswith("not enough space in pool images: need ")
    assert "limited by its quota" in failed["cache_raw_error"]
    set_quota(admin_cluster, 0)  # space freed: no operator action needed
    wait_status(demo_images, image["id"], "Cached", timeout=60)
    worker.wait_for_log("Image %s: the pool has room for its cache again" % image["id"])
    assert conversions(worker.log(), image["id"]) == 1
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    demo_images.delete(image["id"])
    assert_no_garbage(ceph, service_images)


def test_an_image_that_expands_more_than_the_operator_allows_is_refused(
        start_worker, demo_images, ceph, tmp_path):
    bomb = compressed_qcow2(tmp_path / "expands.qcow2", 256 << 20)
    start_worker(extra_conf=FAST + "[converter]\nmax_expansion = 4\n")
    image = upload(demo_images, bomb, cache_raw="True")
    failed = wait_status(demo_images, image["id"], "Error", timeout=120)
    assert "more than [converter] max_expansion = 4 times its upload" in \
        failed["cache_raw_error"], failed
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    demo_images.delete(image["id"])
