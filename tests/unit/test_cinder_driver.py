"""The Cinder driver's decision: clone the image's RAW cache, or create the volume as upstream.

Cinder's own objects and driver class; Ceph and the parent's RBD calls are fakes.
"""

import warnings
from unittest import mock

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from cinder import exception
    from cinder import objects
    from cinder.volume import configuration
    from cinder.volume.drivers import rbd as rbd_driver

import rados
import rbd

from cacheraw.cinder import driver as cacheraw_driver

objects.register_all()

FSID = "5fe62cc7-0392-4a32-8466-081ce0ea970f"
OTHER_FSID = "0c7d1f44-5a06-403f-bb82-ae7ad0d693a6"
IMAGE_ID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"
OTHER_IMAGE = "c905cedb-7281-47e4-8a62-f26bc5fc4c77"
VOLUME_ID = "4c39c3c7-168f-4b32-b585-77f1b3bf0a38"
GiB = 1 << 30
CACHE_URL = "rbd://%s/images/%s_raw/snap" % (FSID, IMAGE_ID)
UPSTREAM = ({"upstream": True}, False)


def make_configuration():
    """As Cinder's own RBD driver tests make it."""
    cfg = mock.Mock(spec=configuration.Configuration)
    cfg.image_conversion_dir = None
    cfg.rbd_cluster_name = "ceph"
    cfg.rbd_pool = "volumes"
    cfg.rbd_ceph_conf = "/etc/ceph/ceph.conf"
    cfg.rbd_secret_uuid = None
    cfg.rbd_user = "cinder"
    cfg.volume_backend_name = None
    cfg.volume_dd_blocksize = "1M"
    cfg.rbd_store_chunk_size = 4
    cfg.rados_connect_timeout = -1
    cfg.rados_connection_retries = 3
    cfg.rados_connection_interval = 5
    cfg.backup_use_temp_snapshot = False
    cfg.enable_deferred_deletion = False
    cfg.rbd_concurrent_flatten_operations = 3
    return cfg


class FakeCluster:
    """What RADOSClient connects to: the backend's cluster, with pools images and volumes."""

    def __init__(self):
        self.fsid, self.pools, self.error = FSID, {"images", "volumes"}, None
        self.connections = 0

    def client(self, driver, pool=None):
        if self.error:
            raise self.error
        self.connections += 1
        cluster = self

        class Client:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            class cluster:
                @staticmethod
                def get_fsid():
                    return cluster.fsid

                @staticmethod
                def pool_exists(name):
                    return name in cluster.pools

                @staticmethod
                def open_ioctx(name):
                    assert name in cluster.pools
                    ioctx = mock.MagicMock(name="ioctx-%s" % name)
                    ioctx.__enter__.return_value = name
                    return ioctx
        return Client()


class FakeCache:
    """The RBD snapshot RBDVolumeProxy opens: a protected snapshot of 1 GiB unless told."""

    def __init__(self, protected=True, size=GiB, error=None):
        self.protected, self._size, self.error = protected, size, error
        self.opened = []

    def proxy(self, driver, name, pool=None, snapshot=None, read_only=False, client=None,
              ioctx=None, **kwargs):
        assert client is not None, "the cache is opened on the connection of the checks"
        self.opened.append((name, ioctx, snapshot, read_only))
        if self.error:
            raise self.error
        cache = self

        class Proxy:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def is_protected_snap(self, snap):
                return cache.protected

            def size(self):
                return cache._size
        return Proxy()


@pytest.fixture
def cache(monkeypatch):
    fake = FakeCache()
    monkeypatch.setattr(rbd_driver, "RBDVolumeProxy", fake.proxy)
    return fake


@pytest.fixture
def cluster(monkeypatch):
    fake = FakeCluster()
    monkeypatch.setattr(rbd_driver, "RADOSClient", fake.client)
    return fake


@pytest.fixture
def parent(monkeypatch):
    upstream = mock.Mock(return_value=UPSTREAM)
    monkeypatch.setattr(rbd_driver.RBDDriver, "clone_image", upstream)
    return upstream


@pytest.fixture
def driver(cache, cluster, parent):
    drv = cacheraw_driver.CacheRawRBDDriver(execute=mock.Mock(),
                                            configuration=make_configuration())
    drv._clone = mock.Mock(return_value={"replication_status": "disabled"})
    drv._resize = mock.Mock()
    drv.delete_volume = mock.Mock()
    return drv


def volume(size=1, extra_specs=None):
    vol_type = None
    if extra_specs is not None:
        vol_type = objects.VolumeType(id="b5a5e5c4-4a3e-4a7a-9b0e-1c7f6cbbd1f3", name="t",
                                      extra_specs=extra_specs)
    return objects.Volume(id=VOLUME_ID, size=size, _name_id=None, encryption_key_id=None,
                          volume_type=vol_type)


def image_meta(**props):
    base = {"cache_raw": "True", "cache_raw_status": "Cached", "cache_raw_url": CACHE_URL,
            "cache_raw_size": str(GiB), "store": "rbd", "hw_disk_bus": "scsi"}
    base.update(props)
    return {"id": IMAGE_ID, "disk_format": "qcow2", "container_format": "bare",
            "properties": {k: v for k, v in base.items() if v is not None}}


def create(drv, vol=None, meta=None):
    location = ("rbd://%s/images/%s/snap" % (FSID, IMAGE_ID), [])
    return drv.clone_image(mock.sentinel.context, vol or volume(), location,
                           meta or image_meta(), mock.sentinel.image_service)


def test_cached_image_is_a_clone_of_its_cache_resized_to_the_volume(driver, cache, cluster,
                                                                    parent):
    vol = volume(size=3)
    update, cloned = create(driver, vol)
    assert cloned is True
    assert update == {"replication_status": "disabled", "provider_location": None}
    driver._clone.assert_called_once_with(vol, "images", IMAGE_ID + "_raw", "snap")
    driver._resize.assert_called_once_with(vol)
    assert cache.opened == [(IMAGE_ID + "_raw", "images", "snap", True)]
    assert cluster.connections == 1
    parent.assert_not_called()


def test_a_cache_in_another_pool_of_the_cluster_is_cloned_from_there(driver, cluster):
    cluster.pools.add("cached-images")
    url = "rbd://%s/cached-images/%s_raw/snap" % (FSID, IMAGE_ID)
    _, cloned = create(driver, meta=image_meta(cache_raw_url=url))
    assert cloned
    assert driver._clone.call_args[0][1:] == ("cached-images", IMAGE_ID + "_raw", "snap")


def test_volume_of_exactly_the_cache_size_is_a_clone(driver, cache):
    cache._size = 2 * GiB
    assert create(driver, volume(size=2))[1]


@pytest.mark.parametrize("props", [
    {"cache_raw_status": None},
    {"cache_raw_status": "Queued"},
    {"cache_raw_status": "Caching"},
    {"cache_raw_status": "Error", "cache_raw_error": "qemu-img failed"},
    # a raw image: upstream clones the image itself
    {"cache_raw_status": "NotNeeded", "cache_raw_url": None, "cache_raw_size": None},
    {"cache_raw_status": "cached"},
    {"cache_raw_url": None},
    {"cache_raw_url": "rbd://%s/images/%s_raw/snap" % (OTHER_FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/images/%s_raw/snap" % (FSID, OTHER_IMAGE)},
    {"cache_raw_url": "rbd://%s/images/%s/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/images/%s_raw/other" % (FSID, IMAGE_ID)},
    {"cache_raw_url": CACHE_URL + "\n"},
    {"cache_raw_url": " " + CACHE_URL},
    {"cache_raw_url": CACHE_URL.upper()},
    {"cache_raw_url": "rbd://%s/images%%2F..%%2Fvolumes/%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/../%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "rbd://%s/images;rm -rf /%s_raw/snap" % (FSID, IMAGE_ID)},
    {"cache_raw_url": "file:///etc/shadow"},
    {"cache_raw_url": "x" * 100000},
])
def test_anything_but_this_image_s_cached_cache_goes_to_upstream(driver, cache, parent, props):
    vol = volume()
    meta = image_meta(**props)
    assert create(driver, vol, meta) == UPSTREAM
    driver._clone.assert_not_called()
    parent.assert_called_once()
    assert parent.call_args[0][1] is vol and parent.call_args[0][3] is meta


@pytest.mark.parametrize("cache_state", [
    {"protected": False},
    {"size": 2 * GiB},
    {"error": rbd.ImageNotFound("cache removed")},
    {"error": rbd.PermissionError("no caps")},
    {"error": rbd.IOError("snapshot not found")},
])
def test_a_cache_ceph_does_not_confirm_goes_to_upstream(driver, cache, parent, cache_state):
    for key, value in cache_state.items():
        setattr(cache, "_size" if key == "size" else key, value)
    assert create(driver, volume(size=1)) == UPSTREAM
    driver._clone.assert_not_called()


@pytest.mark.parametrize("error", [rados.TimedOut("cluster unreachable"),
                                   exception.VolumeBackendAPIException(data="no connection")])
def test_an_error_connecting_to_the_cluster_goes_to_upstream(driver, cluster, parent, error):
    cluster.error = error
    assert create(driver) == UPSTREAM


def test_a_cache_in_a_pool_the_cluster_lacks_goes_to_upstream_at_once(driver, cache, parent):
    url = "rbd://%s/gone/%s_raw/snap" % (FSID, IMAGE_ID)
    assert create(driver, meta=image_meta(cache_raw_url=url)) == UPSTREAM
    assert cache.opened == []


def test_a_cache_that_goes_before_the_clone_goes_to_upstream(driver, parent):
    driver._clone.side_effect = rbd.ImageNotFound("cache removed")
    assert create(driver) == UPSTREAM
    driver._resize.assert_not_called()


def test_a_replicated_volume_type_goes_to_upstream_without_cloning(driver, cluster, parent):
    # Cinder's _setup_volume would enable mirroring on the clone, which librbd refuses for a
    # clone of an unmirrored parent; upstream's path makes a plain image that it can mirror.
    vol = volume(extra_specs={"replication_enabled": "<is> True"})
    assert create(driver, vol) == UPSTREAM
    driver._clone.assert_not_called()
    assert cluster.connections == 0
    assert parent.call_args[0][1] is vol


@pytest.mark.parametrize("extra_specs", [{}, {"replication_enabled": "<is> False"},
                                         {"multiattach": "<is> True"},
                                         {"volume_backend_name": "ceph"}])
def test_other_volume_types_are_clones_of_the_cache(driver, parent, extra_specs):
    assert create(driver, volume(extra_specs=extra_specs))[1] is True
    parent.assert_not_called()


@pytest.mark.parametrize("step,error", [
    ("_clone", exception.ReplicationError(reason="Failed to enable image replication",
                                          volume_id=VOLUME_ID)),
    ("_clone", rados.TimedOut("cluster unreachable")),
    ("_clone", TypeError("an RBDDriver of another release")),
    ("_resize", rbd.IOError("resize failed")),
    ("_resize", rbd.InvalidArgument("size")),
])
def test_a_failed_clone_is_removed_and_the_volume_made_by_upstream(driver, parent, step, error):
    getattr(driver, step).side_effect = error
    vol = volume()
    assert create(driver, vol) == UPSTREAM
    driver.delete_volume.assert_called_once_with(vol)
    parent.assert_called_once()


def test_a_half_made_clone_that_cannot_be_removed_fails_the_create_with_its_error(driver,
                                                                                   parent):
    # Upstream's create would meet the clone's name taken; the clone's own error says more.
    driver._resize.side_effect = rbd.IOError("resize failed")
    driver.delete_volume.side_effect = rbd.ImageBusy("watched")
    with pytest.raises(rbd.IOError):
        create(driver)
    parent.assert_not_called()


def test_an_image_without_properties_goes_to_upstream(driver, parent):
    meta = {"id": IMAGE_ID, "disk_format": "raw"}
    assert create(driver, meta=meta) == UPSTREAM


@pytest.mark.parametrize("props", [{}, {"cache_raw_status": "Error", "cache_raw_error": "bad"}])
def test_the_volume_does_not_inherit_the_image_s_cache_facts(driver, props):
    meta = image_meta(**props)
    create(driver, meta=meta)
    # Cinder records the volume's image metadata from this same dict after clone_image.
    assert meta["properties"] == {"cache_raw": "True", "hw_disk_bus": "scsi"}


def test_the_parent_sees_the_image_without_the_cache_facts(driver, parent):
    create(driver, meta=image_meta(cache_raw_status="Queued"))
    assert "cache_raw_status" not in parent.call_args[0][3]["properties"]
