"""The caching pipeline on the real stack: Glance on Ceph, RabbitMQ, Keystone, qemu-img."""

import json
import os
import re
import subprocess
import time
import uuid

import pytest
import rbd

from tests.functional.helpers import FAST
from tests.functional.helpers import conversions
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import raw_of
from tests.functional.helpers import read_rbd
from tests.functional.helpers import upload
from tests.functional.helpers import wait_for_sweeps
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until_handled





def rbd_du_used(stack, name):
    user = stack["ceph"]["users"]["cacheraw"]
    out = subprocess.run(["rbd", "--conf", stack["ceph"]["conf"], "--id", "cacheraw",
                          "--keyring", user["keyring"], "du", "--format", "json",
                          "images/%s@snap" % name], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return json.loads(out)["images"][0]["used_size"]


@pytest.fixture
def worker(start_worker):
    return start_worker(extra_conf=FAST)


def test_qcow2_is_cached_exactly_as_specified(worker, demo_images, qcow2, ceph, stack, tmp_path):
    image = upload(demo_images, qcow2, cache_raw="True")
    cached = wait_status(demo_images, image["id"], "Cached")  # the demo user reads it all
    name = image["id"] + "_raw"
    assert cached["cache_raw_url"] == "rbd://%s/images/%s/snap" % (stack["ceph"]["fsid"], name)
    assert cached["cache_raw_size"] == str(rbd_du_used(stack, name))
    assert "cache_raw_error" not in cached
    assert cached["store"] == "rbd"
    with rbd.Image(ceph, name, read_only=True) as cache:
        assert cache.is_protected_snap("snap")
    expected = raw_of(qcow2, tmp_path)
    assert read_rbd(ceph, name, "snap") == expected
    # A copy-on-write clone from the URL reads the same data.
    pool, image_name, snap = cached["cache_raw_url"].split("/")[3:6]
    clone = "clone-%s" % uuid.uuid4().hex[:8]
    rbd.RBD().clone(ceph, image_name, snap, ceph, clone, features=rbd.RBD_FEATURE_LAYERING)
    try:
        assert read_rbd(ceph, clone) == expected
    finally:
        rbd.RBD().remove(ceph, clone)
    # The thin copy wrote only the data: far less than the 64 MiB disk.
    assert int(cached["cache_raw_size"]) < 16 << 20
    assert conversions(worker.log(), image["id"]) == 1


def test_setting_cache_raw_after_upload_caches(worker, demo_images, qcow2, ceph, notifications):
    image = upload(demo_images, qcow2)
    # The worker has handled the upload, and swept once more since: it leaves the image alone.
    wait_until_handled(notifications, [worker], [image["id"]])
    wait_for_sweeps(worker)
    assert "cache_raw_status" not in demo_images.get(image["id"])
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    demo_images.patch(image["id"], [{"op": "add", "path": "/cache_raw", "value": "yes"}])
    wait_status(demo_images, image["id"], "Cached")


def test_a_raw_image_needs_no_cache_and_its_owner_sees_no_error(worker, demo_images, tmp_path,
                                                                ceph):
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(1 << 20))
    image = upload(demo_images, path, disk_format="raw", cache_raw="True")
    done = wait_status(demo_images, image["id"], "NotNeeded")
    assert not {"cache_raw_error", "cache_raw_url", "cache_raw_size"} & set(done)
    assert image["id"] + "_raw" not in names_in_pool(ceph)
    worker.wait_for_log("Image %s: no cache needed" % image["id"])


def test_data_outside_ceph_is_downloaded_verified_and_removed(worker, demo_images, qcow2, ceph,
                                                              stack, tmp_path):
    image = upload(demo_images, qcow2, headers={"X-Image-Meta-Store": "local"},
                   cache_raw="True")
    assert image["direct_url"].startswith("file://")
    cached = wait_status(demo_images, image["id"], "Cached")
    assert cached["store"] == "file"
    assert read_rbd(ceph, image["id"] + "_raw", "snap") == raw_of(qcow2, tmp_path)
    conversions = os.path.join(stack["state_dir"], "cacheraw", "conversions")
    assert os.listdir(conversions) == []


def test_delete_removes_the_cache(worker, demo_images, qcow2, ceph):
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    demo_images.delete(image["id"])
    deadline = time.monotonic() + 30
    while image["id"] + "_raw" in names_in_pool(ceph) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert image["id"] + "_raw" not in names_in_pool(ceph)


def test_delete_with_a_clone_keeps_the_clone_then_purges(worker, demo_images, qcow2, ceph,
                                                         tmp_path):
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    name = image["id"] + "_raw"
    clone = "volume-%s" % uuid.uuid4().hex[:8]
    rbd.RBD().clone(ceph, name, "snap", ceph, clone, features=rbd.RBD_FEATURE_LAYERING)
    demo_images.delete(image["id"])
    worker.wait_for_log("moved to the trash")
    assert name not in names_in_pool(ceph)
    assert read_rbd(ceph, clone) == raw_of(qcow2, tmp_path)
    rbd.RBD().remove(ceph, clone)
    worker.wait_for_log("Purged cache %s" % name, timeout=30)
    assert not [e for e in rbd.RBD().trash_list(ceph) if e["name"] == name]


def test_store_is_set_on_every_uploaded_image(worker, demo_images, qcow2):
    plain = upload(demo_images, qcow2)
    wanted = upload(demo_images, qcow2, cache_raw="True")
    for image in (plain, wanted):
        demo_images.wait(image["id"], lambda i: i.get("store") == "rbd", 30, what="store rbd")


def test_manage_recache_converts_again_with_the_same_core(worker, demo_images, qcow2, stack):
    import sys
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    manage = os.path.join(os.path.dirname(sys.executable), "cacheraw-manage")
    done = subprocess.run([manage, "--config-file", stack["cacheraw_conf"], "recache",
                           image["id"], "--force"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Cached" in done.stdout
    assert demo_images.get(image["id"])["cache_raw_status"] == "Cached"
    assert conversions(worker.log(), image["id"]) == 1  # the second one was manage's own
    status = subprocess.run([manage, "--config-file", stack["cacheraw_conf"], "status",
                             image["id"]], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert re.search(r"^  snapshot +protected$", status.stdout, re.M), status.stdout
    assert re.search(r"^  lock holder +-$", status.stdout, re.M), status.stdout
    for args, message in ((["recache", "../../etc/passwd"], "not an image id"),
                          (["status", "%s_raw" % image["id"]], "not an image id"),
                          (["status", str(uuid.uuid4())], "not found"),
                          (["recache"], "required"),
                          (["frobnicate"], "invalid choice")):
        bad = subprocess.run([manage, "--config-file", stack["cacheraw_conf"], *args],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0, args
        assert message in bad.stderr, (args, bad.stderr)


def test_explicit_image_api_endpoint_without_the_catalog(start_worker, demo_images, qcow2, stack):
    # A region the catalog does not have: only the override can name the image API.
    worker = start_worker(extra_conf=FAST + "[image_api]\nregion_name = Nowhere\n"
                          "endpoint_override = %s\n" % stack["glance"]["url"])
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    assert conversions(worker.log(), image["id"]) == 1
