"""The sweep's breaker on the real stack: a worker whose user no longer sees the cached images
(as after a lost role) removes none of their caches until an operator runs reconcile."""

from tests.functional.conftest import make_qcow2
from tests.functional.helpers import FAST
from tests.functional.helpers import assert_no_garbage
from tests.functional.helpers import free_port
from tests.functional.helpers import manage
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import scrape
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until

HELD = "removing none of them"
OPEN = "cacheraw_orphan_breaker_open"


def test_a_user_that_lost_its_view_of_the_images_removes_no_cache(
        start_worker, stack, alt_images, service_images, ceph, tmp_path):
    worker = start_worker(extra_conf=FAST)
    images = [upload(alt_images, make_qcow2(tmp_path / ("%d.qcow2" % n),
                                            writes=(("0x%02x" % (n + 1), "0", "1M"),)),
                     cache_raw="True") for n in range(2)]
    for image in images:
        wait_status(alt_images, image["id"], "Cached")
    worker.stop()
    caches = {image["id"] + "_raw" for image in images}

    # The worker's user now reads those images as gone (404): demo, a member of another
    # project, as the service user would after losing its admin role.
    demo = stack["keystone"]["users"]["demo"]
    blind = tmp_path / "blind.conf"
    blind.write_text("[image_api]\nusername = demo\npassword = %s\nproject_name = demo\n"
                     % demo["password"])
    port = free_port()
    worker = start_worker(name="blind", extra_args=("--config-file", str(blind)),
                          extra_conf="[worker]\nsweep_interval = 2\norphan_breaker_min = 2\n"
                                     "orphan_breaker_ratio = 0\n[metrics]\nenabled = true\n"
                                     "port = %d\n" % port)
    wait_until("two sweeps held back", lambda: worker.log().count(HELD) >= 2, 30)
    assert "ERROR cacheraw.sweeper" in worker.log()
    assert caches <= names_in_pool(ceph)
    assert "removing its orphaned cache" not in worker.log()
    assert scrape(port)[OPEN] == 1

    # The operator confirms: reconcile, with the same view, removes them; the breaker closes.
    done = manage(stack, "--config-file", str(blind), "reconcile")
    assert done.returncode == 0, done.stdout + done.stderr
    for name in caches:
        assert "removed cache images/%s" % name in done.stdout, done.stdout
    assert not caches & names_in_pool(ceph)
    wait_until("the breaker closed", lambda: scrape(port)[OPEN] == 0, 30)

    for image in images:
        alt_images.delete(image["id"])
    assert_no_garbage(ceph, service_images)
