"""Volumes from the cache: upstream Cinder with cacheraw's driver, through the openstack CLI as
the demo user, on the real stack (MariaDB, Keystone, Glance and Cinder on Ceph)."""

import json
import subprocess
import time
import uuid

import pytest
import rbd

from tests.functional.conftest import (STATE, VENV_BIN, make_qcow2, need,
                                      pools_as_cacheraw)
from tests.functional.helpers import openstack
from tests.functional.helpers import small_disk
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status

CACHE_FACTS = ("cache_raw_status", "cache_raw_url", "cache_raw_size", "cache_raw_error")
OTHER_FSID = "0c7d1f44-5a06-403f-bb82-ae7ad0d693a6"


@pytest.fixture(scope="module")
def cinder(stack, sessions):
    need("cinder" in stack, "the stack has no Cinder: restart it with 'make stack-down "
                            "stack-up'")
    return VolumeClient(sessions["demo"], stack["cinder"]["url"])


class VolumeClient:
    """Volumes of the demo user: created with the CLI, watched through the API."""

    def __init__(self, session, url):
        self.session = session
        self.url = "%s/v3/%s" % (url, session.get_project_id())
        self.made = []

    def create(self, image_id, size=1, check=True, volume_type=None):
        typed = ("--type", volume_type) if volume_type else ()
        done = openstack("volume", "create", "--image", image_id, "--size", str(size), *typed,
                         "test-%s" % uuid.uuid4().hex[:8], "-f", "json", check=check)
        if done.returncode != 0:
            return done
        volume_id = json.loads(done.stdout)["id"]
        self.made.append(volume_id)
        return volume_id

    def get(self, volume_id):
        return self.session.get(self.url + "/volumes/%s" % volume_id).json()["volume"]

    def wait(self, volume_id, statuses=("available",), timeout=180):
        deadline = time.monotonic() + timeout
        volume = None
        while time.monotonic() < deadline:
            volume = self.get(volume_id)
            if volume["status"] in statuses or volume["status"] == "error":
                break
            time.sleep(0.5)
        assert volume["status"] in statuses, "volume %s: %s" % (volume_id, volume)
        return volume

    def available(self, image_id, size=1):
        return self.wait(self.create(image_id, size))

    def delete(self, volume_id):
        self.session.delete(self.url + "/volumes/%s" % volume_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.session.get(self.url + "/volumes/%s" % volume_id,
                                raise_exc=False).status_code == 404:
                return
            time.sleep(0.5)
        raise AssertionError("volume %s not deleted in 120 s" % volume_id)


@pytest.fixture(scope="module", autouse=True)
def delete_volumes(cinder):
    yield
    for volume_id in cinder.made:
        cinder.session.delete(cinder.url + "/volumes/%s" % volume_id, raise_exc=False)


@pytest.fixture(scope="module")
def worker(module_worker):
    return module_worker


@pytest.fixture(scope="module")
def cluster(stack):
    """The cluster as the cacheraw user, which reads the volumes pool (docs/install.md: Ceph
    caps)."""
    with pools_as_cacheraw(stack, ("images", "volumes")) as pools:
        yield pools


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    return small_disk(tmp_path_factory, "cinder-disk")


@pytest.fixture(scope="module")
def cached(worker, demo_images, disk):
    image = upload(demo_images, disk[0], cache_raw="True")
    return wait_status(demo_images, image["id"], "Cached")


def parent_of(cluster, volume_id):
    with rbd.Image(cluster["volumes"], "volume-%s" % volume_id, read_only=True) as volume:
        try:
            return "%s/%s@%s" % volume.parent_info()
        except rbd.ImageNotFound:
            return None


def assert_bytes(cluster, volume, raw):
    """The volume holds ``raw`` at its start and zeros beyond, to its full size."""
    with rbd.Image(cluster["volumes"], "volume-%s" % volume["id"], read_only=True) as data:
        assert data.size() == volume["size"] << 30
        assert data.read(0, len(raw)) == raw
        extents = []
        data.diff_iterate(len(raw), data.size() - len(raw), None,
                          lambda offset, length, exists: exists and extents.append((offset,
                                                                                    length)))
        for offset, length in extents:
            for start in range(offset, offset + length, 4 << 20):
                chunk = min(4 << 20, offset + length - start)
                assert data.read(start, chunk) == bytes(chunk), "data at %d" % start


def cache_of(image_id):
    return "images/%s_raw@snap" % image_id


# 1. The clone

@pytest.mark.parametrize("size", [1, 2])
def test_volume_from_a_cached_qcow2_is_a_clone_of_its_cache(cinder, cached, cluster, disk,
                                                            size):
    volume = cinder.available(cached["id"], size)
    assert parent_of(cluster, volume["id"]) == cache_of(cached["id"])
    assert_bytes(cluster, volume, disk[1])
    assert volume["bootable"] == "true"
    metadata = volume["volume_image_metadata"]
    assert metadata["image_id"] == cached["id"] and metadata["cache_raw"] == "True"
    assert not set(CACHE_FACTS + ("store",)) & set(metadata)


# 2. The fallbacks: the volume is made as upstream makes it

def other_cache_url(stack, cached):
    return "rbd://%s/images/%s_raw/snap" % (stack["ceph"]["fsid"], cached["id"])


FALLBACKS = {
    "queued": lambda stack, image, cached: {"cache_raw_status": "Queued"},
    "caching": lambda stack, image, cached: {"cache_raw_status": "Caching"},
    "error": lambda stack, image, cached: {"cache_raw_status": "Error",
                                           "cache_raw_error": "qemu-img failed"},
    # The image says Cached, and names its own cache, which is not in Ceph.
    "cache-missing": lambda stack, image, cached: {
        "cache_raw_url": "rbd://%s/images/%s_raw/snap" % (stack["ceph"]["fsid"], image["id"])},
    "another-cluster": lambda stack, image, cached: {
        "cache_raw_url": "rbd://%s/images/%s_raw/snap" % (OTHER_FSID, image["id"])},
    # A usable cache, of another image.
    "another-image": lambda stack, image, cached: {"cache_raw_url": other_cache_url(stack,
                                                                                    cached)},
    "hostile": lambda stack, image, cached: {
        "cache_raw_url": "rbd://%s/images/%s_raw/snap\n../../volumes/x" % (
            stack["ceph"]["fsid"], image["id"])},
}


@pytest.fixture(scope="module")
def fallbacks(stack, cinder, cached, demo_images, service_images, disk):
    """A volume for each case, their creates all in flight at once."""
    made = {}
    for case in sorted(FALLBACKS):
        image = upload(demo_images, disk[0])  # no cache_raw: the worker leaves it alone
        facts = {"cache_raw_status": "Cached", "cache_raw_size": cached["cache_raw_size"]}
        facts.update(FALLBACKS[case](stack, image, cached))
        service_images.patch(image["id"], [{"op": "add", "path": "/" + key, "value": value}
                                           for key, value in facts.items()])
        made[case] = cinder.create(image["id"])
    return made


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_without_a_usable_cache_the_volume_is_made_as_upstream_makes_it(
        cinder, fallbacks, cluster, disk, case):
    volume = cinder.wait(fallbacks[case])
    assert parent_of(cluster, volume["id"]) is None
    assert_bytes(cluster, volume, disk[1])


def test_a_volume_smaller_than_the_cache_is_refused_as_upstream_refuses_it(
        worker, cinder, demo_images, cluster, tmp_path):
    path = make_qcow2(tmp_path / "big.qcow2", size="1536M", writes=(("0x5a", "0", "1M"),))
    image = upload(demo_images, path, cache_raw="True")
    wait_status(demo_images, image["id"], "Cached", timeout=120)
    before = set(rbd.RBD().list(cluster["volumes"]))
    done = cinder.create(image["id"], size=1, check=False)
    if not isinstance(done, subprocess.CompletedProcess):
        assert cinder.wait(done, statuses=("error",))["status"] == "error"
    else:
        assert "size" in done.stderr.lower(), done.stderr
    assert {n for n in rbd.RBD().list(cluster["volumes"]) if n not in before} == set()


def test_a_replicated_volume_type_is_made_as_upstream_makes_it(stack, cinder, cached, cluster,
                                                                disk):
    # Cinder mirrors each volume of the type, and Ceph mirrors no clone of an unmirrored
    # parent ("mirroring is not enabled for the parent"): a clone of the cache would fail
    # (cinder-volume 29 even died of it, SIGSEGV: its _clone removes the clone through the
    # connection it has closed).
    before = set(rbd.RBD().list(cluster["volumes"]))
    volume = cinder.wait(cinder.create(cached["id"], volume_type="cacheraw-replicated"))
    assert volume["volume_type"] == "cacheraw-replicated"
    assert volume["replication_status"] == "enabled"
    with rbd.Image(cluster["volumes"], "volume-%s" % volume["id"], read_only=True) as data:
        assert data.mirror_image_get_info()["state"] == rbd.RBD_MIRROR_IMAGE_ENABLED
    assert parent_of(cluster, volume["id"]) is None
    assert_bytes(cluster, volume, disk[1])
    assert set(rbd.RBD().list(cluster["volumes"])) - before == {"volume-%s" % volume["id"]}
    log = (STATE / "log" / "cinder-volume.log").read_text()
    assert "Volume %s: its type is replicated" % volume["id"] in log


# 3. Deleting and recaching an image whose cache has volume clones

def manage(stack, *args):
    done = subprocess.run([str(VENV_BIN / "cacheraw-manage"), "--config-file",
                           stack["cacheraw_conf"], *args], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def trashed(cluster, name):
    return [e for e in rbd.RBD().trash_list(cluster["images"]) if e["name"] == name]


def test_recache_and_delete_with_volume_clones_keep_the_volumes_then_purge(
        stack, worker, cinder, demo_images, cluster, disk):
    image = upload(demo_images, disk[0], cache_raw="True")
    wait_status(demo_images, image["id"], "Cached")
    name = image["id"] + "_raw"
    first = cinder.available(image["id"])
    second = cinder.available(image["id"])
    assert json.loads(manage(stack, "status", image["id"], "--format", "json"))[
        "ceph"]["clones"] == 2
    listed = json.loads(manage(stack, "list", "--status", "Cached", "--format", "json"))
    assert [v["ceph"]["clones"] for v in listed if v["id"] == image["id"]] == [2]

    # recache --force: the old cache goes to the trash, its clones keep their data
    manage(stack, "recache", "--force", "--wait", image["id"])
    assert len(trashed(cluster, name)) == 1
    wait_status(demo_images, image["id"], "Cached")
    third = cinder.available(image["id"])
    assert parent_of(cluster, third["id"]) == cache_of(image["id"])

    # delete: the new cache leaves its name too
    demo_images.delete(image["id"])
    worker.wait_for_log("Image %s: cache has clones; moved to the trash" % image["id"])
    assert name not in rbd.RBD().list(cluster["images"])
    assert len(trashed(cluster, name)) == 2
    for volume in (first, second, third):
        assert_bytes(cluster, volume, disk[1])

    # the sweep purges each trashed cache once its last clone is gone
    cinder.delete(first["id"])
    cinder.delete(third["id"])
    deadline = time.monotonic() + 30
    while len(trashed(cluster, name)) != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(trashed(cluster, name)) == 1
    assert_bytes(cluster, second, disk[1])
    cinder.delete(second["id"])
    worker.wait_for_log("Purged cache %s" % name, timeout=30)
    deadline = time.monotonic() + 30
    while trashed(cluster, name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert trashed(cluster, name) == []


# 4. Upload to image

def test_a_member_uploads_a_cloned_volume_to_an_image_that_gets_its_own_cache(
        stack, cinder, cached, demo_images, cluster, disk, tmp_path):
    volume = cinder.available(cached["id"])
    assert parent_of(cluster, volume["id"]) == cache_of(cached["id"])
    done = openstack("image", "create", "--volume", volume["id"], "--disk-format", "qcow2",
                     "uploaded-%s" % uuid.uuid4().hex[:8], "-f", "json")
    image_id = json.loads(done.stdout)["image_id"]
    image = demo_images.wait(image_id, lambda i: i["status"] in ("active", "killed"),
                             timeout=180, what="active")
    assert image["status"] == "active"
    assert image["cache_raw"] == "True"
    assert image.get("cache_raw_url") != cached["cache_raw_url"]
    own = wait_status(demo_images, image_id, "Cached", timeout=120)
    assert own["cache_raw_url"] == "rbd://%s/images/%s_raw/snap" % (stack["ceph"]["fsid"],
                                                                    image_id)
    with rbd.Image(cluster["images"], image_id + "_raw", snapshot="snap",
                   read_only=True) as cache:
        assert cache.size() == 1 << 30
        assert cache.read(0, len(disk[1])) == disk[1]
    cinder.wait(volume["id"])


def test_a_volume_uploaded_as_a_raw_image_inherits_cache_raw_and_needs_no_cache(
        cinder, cached, demo_images, cluster):
    volume = cinder.available(cached["id"])
    done = openstack("image", "create", "--volume", volume["id"], "--disk-format", "raw",
                     "uploaded-raw-%s" % uuid.uuid4().hex[:8], "-f", "json")
    image_id = json.loads(done.stdout)["image_id"]
    image = demo_images.wait(image_id, lambda i: i["status"] in ("active", "killed"),
                             timeout=180, what="active")
    assert image["status"] == "active" and image["disk_format"] == "raw"
    assert image["cache_raw"] == "True"
    # What its owner sees: no failure, and nothing that claims a cache.
    seen = wait_status(demo_images, image_id, "NotNeeded", timeout=120)
    assert not {"cache_raw_error", "cache_raw_url", "cache_raw_size"} & set(seen)
    assert image_id + "_raw" not in set(rbd.RBD().list(cluster["images"]))
    # Cinder clones the raw image itself, as upstream does.
    again = cinder.available(image_id)
    assert parent_of(cluster, again["id"]) == "images/%s@snap" % image_id
    cinder.wait(volume["id"])
