"""The core as the daemon and the commands build it: one Cacher on the given store."""

from cacheraw import cacher
from cacheraw import core
from tests.unit.conftest import FakeImages
from tests.unit.conftest import FakeStore


def test_build_wires_the_given_store_to_the_cacher(conf, monkeypatch):
    # A fake image API: loading a real one's auth plugin registers its options on the option
    # group that every ConfigOpts of this process shares.
    apis = []
    monkeypatch.setattr(core.image_api, "ImageAPI",
                        lambda c: apis.append(c) or FakeImages(None))
    store = FakeStore()
    built = core.build(conf, store=store, enqueue=[].append)
    assert isinstance(built, cacher.Cacher)
    assert apis == [conf]
    assert built.images is not None and built.store is store
    assert built.conf is conf


def test_build_without_a_store_connects_a_new_one(conf, monkeypatch):
    connected = []

    class Store(FakeStore):
        def __init__(self, c):
            self.conf = c

        def connect(self):
            connected.append(self)

    monkeypatch.setattr(core.image_api, "ImageAPI", lambda c: FakeImages(None))
    monkeypatch.setattr(core, "CephStore", Store)
    built = core.build(conf)
    assert connected == [built.store] and built.store.conf is conf
