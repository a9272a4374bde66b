"""The Nova driver's decision: clone the image's RAW cache, or make the root disk as upstream.

Nova's own driver loader, image backend and RBD helpers; the image API, Ceph and the parent's
clone are fakes. Runs in a Nova virtual environment (tools/nova-venv.sh).
"""

import types
import warnings
from unittest import mock

import pytest
import rados
import rbd

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from nova import exception
    from nova.storage import rbd_utils
    from nova.tests import fixtures as nova_fixtures
    from nova.virt import driver as virt_driver
    from nova.virt import fake as fake_virt
    from nova.virt.libvirt import imagebackend

from cacheraw.nova import driver as cacheraw_driver

FSID = "5fe62cc7-0392-4a32-8466-081ce0ea970f"
OTHER_FSID = "0c7d1f44-5a06-403f-bb82-ae7ad0d693a6"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
OTHER_IMAGE = "c905cedb-7281-47e4-8a62-f26bc5fc4c77"
INSTANCE = "4c39c3c7-168f-4b32-b585-77f1b3bf0a38"
CACHE_URL = "rbd://%s/images/%s_raw/snap" % (FSID, IMAGE_ID)
DISK = INSTANCE + "_disk"


class FakeCeph:
    """What RADOSClient connects to and rbd.Image opens: pools images and vms, and a protected
    snapshot images/<IMAGE_ID>_raw@snap."""

    def __init__(self):
        self.fsid, self.pools, self.protected = FSID, {"images", "vms"}, True
        self.error, self.opened, self.connections = None, [], 0

    def client(self, driver, pool=None):
        if self.error:
            raise self.error
        self.connections += 1
        ceph = self
        cluster = mock.Mock(get_fsid=lambda: ceph.fsid,
                            pool_exists=lambda name: name in ceph.pools)
        cluster.open_ioctx.side_effect = self.ioctx
        client = mock.MagicMock(cluster=cluster)
        client.__enter__.return_value = client
        return client

    def ioctx(self, name):
        assert name in self.pools
        ioctx = mock.MagicMock(name="ioctx")
        ioctx.__enter__.return_value = "ioctx-%s" % name
        return ioctx

    def image(self, ioctx, name, snapshot=None, read_only=False):
        self.opened.append((ioctx, name, snapshot, read_only))
        if name != IMAGE_ID + "_raw":
            raise rbd.ImageNotFound("no image %s" % name)
        snap = mock.MagicMock(name="snap")
        snap.__enter__.return_value = snap
        snap.is_protected_snap.return_value = self.protected
        snap.size.return_value = 1 << 30
        return snap


@pytest.fixture
def ceph(monkeypatch):
    fake = FakeCeph()
    monkeypatch.setattr(rbd_utils, "RADOSClient", fake.client)
    monkeypatch.setattr(rbd_utils.rbd, "Image", fake.image)
    return fake


@pytest.fixture
def images(monkeypatch):
    """The image API with one image: a qcow2 image whose cache is Cached unless told."""
    found = {"image": image_meta()}

    def get(context, image_id, **kwargs):
        if isinstance(found["image"], Exception):
            raise found["image"]
        return found["image"]
    monkeypatch.setattr(imagebackend.IMAGE_API, "get", mock.Mock(side_effect=get))
    return found


@pytest.fixture
def parent(monkeypatch):
    upstream = mock.Mock(side_effect=exception.ImageUnacceptable(
        image_id=IMAGE_ID, reason="Image is not raw format"))
    monkeypatch.setattr(imagebackend.Rbd, "clone", upstream)
    return upstream


@pytest.fixture
def backend(flags, ceph, images, parent, monkeypatch):
    flags(group="libvirt", images_type="rbd", images_rbd_pool="vms", rbd_user="nova")
    monkeypatch.setattr(rbd_utils.RBDDriver, "clone", mock.Mock(return_value=None))
    instance = types.SimpleNamespace(uuid=INSTANCE)
    return cacheraw_driver.CacheRawRbd(instance=instance, disk_name="disk")


def image_meta(**props):
    base = {"cache_raw": "True", "cache_raw_status": "Cached", "cache_raw_url": CACHE_URL,
            "cache_raw_size": str(1 << 30), "store": "rbd"}
    base.update(props)
    return {"id": IMAGE_ID, "disk_format": "qcow2", "container_format": "bare",
            "locations": [{"url": "rbd://%s/images/%s/snap" % (FSID, IMAGE_ID),
                           "metadata": {}}],
            "properties": {k: v for k, v in base.items() if v is not None}}


def test_a_cached_image_s_disk_is_a_clone_of_its_cache(backend, ceph, parent):
    backend.clone(mock.sentinel.context, IMAGE_ID)
    rbd_utils.RBDDriver.clone.assert_called_once_with({"url": CACHE_URL}, DISK)
    assert ceph.opened == [("ioctx-images", IMAGE_ID + "_raw", "snap", True)]
    assert ceph.connections == 1
    parent.assert_not_called()


def test_a_cache_in_another_pool_of_the_cluster_is_cloned_from_there(backend, ceph, images):
    ceph.pools.add("cached-images")
    url = "rbd://%s/cached-images/%s_raw/snap" % (FSID, IMAGE_ID)
    images["image"] = image_meta(cache_raw_url=url)
    backend.clone(mock.sentinel.context, IMAGE_ID)
    rbd_utils.RBDDriver.clone.assert_called_once_with({"url": url}, DISK)


@pytest.mark.parametrize("props", [
    {"cache_raw_status": None},
    {"cache_raw_status": "Queued"},
    {"cache_raw_status": "Caching"},
    {"cache_raw_status": "Error", "cache_raw_error": "qemu-img failed"},
    {"cache_raw_url": None},
    {"cache_raw_url": "rbd://%s/images/%s_raw/snap" % (FSID, OTHER_IMAGE)},
    {"cache_raw_url": "rbd://%s/images/%s_raw/snap" % (OTHER_FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/gone/%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/images/%s/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/../%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "file:///etc/shadow"},
])
def test_anything_but_this_image_s_cached_cache_goes_to_upstream(backend, images, parent,
                                                                 props):
    images["image"] = image_meta(**props)
    with pytest.raises(exception.ImageUnacceptable):
        backend.clone(mock.sentinel.context, IMAGE_ID)
    rbd_utils.RBDDriver.clone.assert_not_called()
    parent.assert_called_once_with(mock.sentinel.context, IMAGE_ID)


def test_an_unprotected_snapshot_goes_to_upstream(backend, ceph, parent):
    ceph.protected = False
    with pytest.raises(exception.ImageUnacceptable):
        backend.clone(mock.sentinel.context, IMAGE_ID)
    rbd_utils.RBDDriver.clone.assert_not_called()


def test_a_cache_in_a_missing_pool_is_never_opened(backend, ceph, images, parent):
    images["image"] = image_meta(cache_raw_url="rbd://%s/gone/%s_raw/snap" % (FSID, IMAGE_ID))
    with pytest.raises(exception.ImageUnacceptable):
        backend.clone(mock.sentinel.context, IMAGE_ID)
    assert ceph.opened == []


@pytest.mark.parametrize("error", [
    rados.TimedOut("cluster unreachable"),
    rados.PermissionDeniedError("no caps"),
    rbd.ImageNotFound("cache removed"),
    exception.ImageNotFound(image_id=IMAGE_ID),
    RuntimeError("anything else"),
])
def test_an_error_while_checking_goes_to_upstream(backend, ceph, images, parent, error):
    if isinstance(error, exception.ImageNotFound):
        images["image"] = error
    elif isinstance(error, rbd.Error):
        ceph.image = mock.Mock(side_effect=error)
        rbd_utils.rbd.Image = ceph.image
    else:
        ceph.error = error
    with pytest.raises(exception.ImageUnacceptable):
        backend.clone(mock.sentinel.context, IMAGE_ID)
    parent.assert_called_once()


@pytest.mark.parametrize("error", [rbd.ImageNotFound("cache removed"),
                                   exception.Forbidden("no write permission on vms")])
def test_a_clone_that_fails_goes_to_upstream(backend, parent, error):
    rbd_utils.RBDDriver.clone.side_effect = error
    with pytest.raises(exception.ImageUnacceptable):
        backend.clone(mock.sentinel.context, IMAGE_ID)
    parent.assert_called_once_with(mock.sentinel.context, IMAGE_ID)


def test_the_parent_gets_its_arguments_unchanged(backend, images, parent):
    images["image"] = image_meta(cache_raw_status="Caching")
    parent.side_effect = None
    parent.return_value = mock.sentinel.cloned
    assert backend.clone(mock.sentinel.context, IMAGE_ID, copy_to_store=False) \
        is mock.sentinel.cloned
    parent.assert_called_once_with(mock.sentinel.context, IMAGE_ID, copy_to_store=False)


def test_nova_loads_the_driver_through_the_shim_with_its_rbd_backend(flags):
    flags(group="libvirt", images_type="rbd", images_rbd_pool="vms")
    libvirt = nova_fixtures.LibvirtFixture()
    libvirt.setUp()
    try:
        drv = virt_driver.load_compute_driver(fake_virt.FakeVirtAPI(), "cacheraw.LibvirtDriver")
    finally:
        libvirt.cleanUp()
    assert type(drv) is cacheraw_driver.CacheRawLibvirtDriver
    assert drv.image_backend.backend() is cacheraw_driver.CacheRawRbd
    assert drv.image_backend.backend("qcow2") is imagebackend.Qcow2
