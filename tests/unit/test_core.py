"""The core's decisions, with fakes that keep the real exception names."""

import datetime
import subprocess

import pytest
from oslo_config import cfg

from cacheraw import cacher
from cacheraw import converter
from cacheraw import exception
from cacheraw import image_api
from cacheraw import lease
from cacheraw import worker
from cacheraw.conf import register_opts
from tests.unit.fakes import FakeLocks

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


@pytest.fixture
def conf():
    c = cfg.ConfigOpts()
    register_opts(c)
    c([])
    return c


class FakeImages:
    def __init__(self, image):
        self.image = image
        self.patches = []

    def get(self, image_id):
        if self.image is None:
            raise exception.ImageNotFound(image_id)
        return dict(self.image)

    def shows_own_write(self, image_id, payload):
        return False

    def update(self, image_id, wanted, only_if=None, only_if_absent=None):
        if (only_if is not None and not only_if(self.image)) or \
                (only_if_absent is not None and only_if_absent in self.image):
            return dict(self.image)
        self.patches.append(wanted)
        for k, v in wanted.items():
            if v is None:
                self.image.pop(k, None)
            else:
                self.image[k] = v
        return dict(self.image)


class FakeStore:
    pool = "images"

    def fsid(self):
        return "fsid"

    def has_protected_snap(self, name):
        return False


@pytest.mark.parametrize("value,wanted", [("True", True), ("true", True), ("yes", True),
                                          ("1", True), ("on", True), ("False", False),
                                          ("no", False), (None, False), ("maybe", False)])
def test_cache_raw_accepts_the_usual_boolean_spellings(value, wanted):
    image = {"status": "active", "cache_raw": value}
    assert cacher.wants_cache(image) is wanted


def test_only_active_images_want_a_cache():
    assert not cacher.wants_cache({"status": "queued", "cache_raw": "True"})


@pytest.mark.parametrize("image_id,ok", [(ID, True), (ID.upper(), False), ("x", False),
                                         (ID + "/../etc", False), ("../" + ID[3:], False),
                                         (None, False)])
def test_only_lowercase_uuids_name_anything_in_ceph(image_id, ok):
    assert cacher.valid_id(image_id) is ok


def test_raw_image_gets_the_known_reason(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "raw"})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    assert core.request(images.get(ID)) is False
    assert images.image["cache_raw_status"] == "Error"
    assert images.image["cache_raw_error"] == "image is already raw; clone it directly"
    assert queued == []


def test_new_request_is_queued_before_it_is_acknowledged(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "direct_url": "rbd://fsid/images/%s/snap" % ID})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    core.on_event("image.upload", ID)
    assert images.image["cache_raw_status"] == "Queued"
    assert images.image["store"] == "rbd"
    assert queued == [ID]
    # One write: the store and the status together.
    assert images.patches == [{"cache_raw_status": "Queued", "cache_raw_error": None,
                               "store": "rbd"}]


def test_store_is_set_alone_when_another_worker_queued_the_image_first(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "direct_url": "rbd://fsid/images/%s/snap" % ID})
    seen = images.get(ID)
    images.image["cache_raw_status"] = "Queued"
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=lambda image_id: True)
    core.request(seen)
    assert images.patches == [{"store": "rbd"}]
    assert images.image["cache_raw_status"] == "Queued"


def test_store_alone_for_an_image_that_wants_no_cache(conf):
    images = FakeImages({"id": ID, "status": "active", "disk_format": "qcow2",
                         "direct_url": "file:///var/lib/glance/images/%s" % ID})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    assert core.request(images.get(ID)) is False
    assert images.patches == [{"store": "file"}]


def test_permanent_error_is_not_requeued_by_events(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "cache_raw_status": "Error",
                         "cache_raw_error": "unsafe qcow2 image: backing file"})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    core.on_event("image.update", ID)
    assert queued == []


def transient_image(attempt, minutes_ago):
    updated = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=minutes_ago)
    return {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
            "cache_raw_status": "Error", "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cache_raw_error": "temporary failure (attempt %d of 5): Ceph timed out" % attempt}


@pytest.mark.parametrize("attempt,minutes_ago,due", [(1, 0, False), (1, 2, True),
                                                    (3, 3, False), (3, 5, True),
                                                    (5, 600, False)])
def test_sweep_retries_transient_errors_with_growing_capped_delays(conf, attempt, minutes_ago,
                                                                   due):
    queued = []
    core = cacher.Cacher(conf, None, FakeStore(), None, enqueue=queued.append)
    assert core._retry_due(transient_image(attempt, minutes_ago)) is due
    assert queued == ([ID] if due else [])


def test_patch_ops_add_replace_remove():
    image = {"a": "1", "b": "2"}
    ops = image_api.patch_ops(image, {"a": "1", "b": "3", "c": "4", "d": None, "a2": None})
    assert ops == [{"op": "replace", "path": "/b", "value": "3"},
                   {"op": "add", "path": "/c", "value": "4"}]
    assert image_api.patch_ops({"e": "x"}, {"e": None}) == [{"op": "remove", "path": "/e"}]


def test_qemu_option_values_cannot_inject_options():
    text = converter.image_opts({"driver": "rbd", "image": "a,file.filename=/etc/passwd"})
    assert text == "driver=rbd,image=a,,file.filename=/etc/passwd"
    with pytest.raises(exception.UnsafeImage):
        converter.image_opts({"image": "a\nb"})


def test_work_queue_holds_each_image_once():
    queue = worker.WorkQueue()
    assert queue.put(ID) is True
    assert queue.put(ID) is False
    assert queue.get() == ID
    assert queue.put(ID) is False  # still running
    queue.done(ID)
    assert queue.put(ID) is True
    queue.close()
    assert queue.get() is None


class HeadSource:
    def __init__(self, path):
        self.path = path

    def read_head(self, length):
        with open(self.path, "rb") as f:
            return f.read(length)


def test_inspection_refuses_a_backing_file(conf, tmp_path):
    path = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F",
                    "raw", str(path)], check=True)
    with pytest.raises(exception.UnsafeImage, match="backing file"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_mislabelled_image(conf, tmp_path):
    path = tmp_path / "r.qcow2"
    path.write_bytes(b"\0" * 65536)
    with pytest.raises(exception.UnsafeImage, match="not qcow2"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_refuses_a_huge_virtual_size(conf, tmp_path):
    path = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "2T"], check=True)
    with pytest.raises(exception.UnsafeImage, match="exceeds"):
        converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")


def test_inspection_accepts_a_plain_qcow2(conf, tmp_path):
    path = tmp_path / "ok.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    assert str(converter.Converter(conf, None).inspect(HeadSource(path), "qcow2")) == "qcow2"


class LockingStore(FakeStore):
    """A store whose cache image and lock are remembered, for the conversion flow."""

    def __init__(self):
        self.removed = []
        self.locks = FakeLocks()
        self.created = []

    @property
    def locked(self):
        return {i for i in self.locks.holders if self.locks.is_locked(i)}

    def conversion_lock(self, image_id, on_lost=None):
        return lease.hold(self.locks, image_id, 60, on_lost, clock=self.locks.clock)

    def remove(self, name):
        self.removed.append(name)
        return "absent"

    def remove_partial(self, name):
        return self.remove(name)

    def secret_key(self):
        return None

    def pool_space(self):
        return 1 << 40, "free space"

    def create(self, name, size):
        self.created.append((name, size))


class FailingConverter:
    def __init__(self, error):
        self.error = error

    def inspect(self, source, fmt):
        pass

    def info(self, source, fmt, secret):
        return {"virtual-size": 1 << 20}

    def data_bytes(self, source, fmt, secret, job=None, bound=None, info=None):
        return 1 << 20

    def convert(self, source, fmt, name, job, secret):
        if self.error is not None:
            raise self.error


def failing_core(conf, error, status=None, message=None):
    image = {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
             "direct_url": "rbd://fsid/images/%s/snap" % ID}
    if status:
        image.update({"cache_raw_status": status, "cache_raw_error": message})
    store = LockingStore()
    return cacher.Cacher(conf, FakeImages(image), store, FailingConverter(error)), store


def test_transient_failures_count_their_attempts(conf):
    core, store = failing_core(conf, exception.ConversionFailed("qemu-img convert timed out"),
                               "Error", "temporary failure (attempt 2 of 5): Ceph timed out")
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_error"] == (
        "temporary failure (attempt 3 of 5): qemu-img convert timed out")
    assert store.removed[-1] == ID + "_raw"  # the partial cache is gone
    assert store.locked == set()


def test_permanent_failure_is_recorded_as_it_is(conf):
    core, _ = failing_core(conf, exception.UnsafeImage("unsafe qcow2 image: backing file"))
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_status"] == "Error"
    assert core.images.image["cache_raw_error"] == "unsafe qcow2 image: backing file"


def test_a_bug_leaves_no_partial_cache_and_tells_the_operator(conf):
    core, store = failing_core(conf, KeyError("virtual-size"))
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_error"].startswith("internal error: KeyError")
    assert store.removed[-1] == ID + "_raw"


def test_shutdown_leaves_the_image_queued(conf):
    core, store = failing_core(conf, cacher.SHUTDOWN)
    assert core.cache(ID) == "aborted"
    assert core.images.image["cache_raw_status"] == "Queued"
    assert store.removed[-1] == ID + "_raw"


def test_an_image_locked_by_another_worker_is_left_alone(conf):
    core, store = failing_core(conf, AssertionError("must not convert"))
    store.locks.steal(ID)
    assert core.cache(ID) == "busy"
    assert core.images.patches == []


def test_only_uuid_caches_are_ever_removed_unasked():
    from cacheraw import store
    assert store.is_cache_name(ID + "_raw")
    for name in (ID, "volume-1_raw", ID.upper() + "_raw", ID + "_raw2", "x" + ID + "_raw"):
        assert not store.is_cache_name(name)


def test_the_notification_of_our_own_write_is_not_read_again(conf):
    class OwnWrite(FakeImages):
        def shows_own_write(self, image_id, payload):
            return payload == {"id": image_id}

        def get(self, image_id):
            raise AssertionError("read again")

    core = cacher.Cacher(conf, OwnWrite({"id": ID}), FakeStore(), None)
    core.on_event("image.update", ID, {"id": ID})
    with pytest.raises(AssertionError):
        core.on_event("image.upload", ID, {"id": ID})


class OrphanStore(LockingStore):
    """Two orphaned caches; Ceph refuses to remove the first, and to purge the trash."""

    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def list_caches(self):
        return [image_id + "_raw" for image_id in self.ids]

    def remove(self, name):
        if name.startswith(self.ids[0]):
            raise exception.CephError("PermissionError: error listing children")
        self.removed.append(name)
        return "removed"

    def purge_trash(self):
        raise exception.CephError("PermissionError: error listing children")


class NoImages:
    def list(self, **filters):
        return []

    def get(self, image_id):
        raise exception.ImageNotFound(image_id)


def test_one_cache_that_cannot_be_removed_does_not_stop_the_sweep(conf):
    other = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
    store = OrphanStore([ID, other])
    core = cacher.Cacher(conf, NoImages(), store, None, enqueue=lambda image_id: None)
    assert core.sweep() == 0
    assert store.removed == [other + "_raw"]
