"""The core as the daemon and the commands build it: one Cacher on the given store."""

from cacheraw import cacher
from cacheraw import core
from tests.unit.conftest import FakeStore

IMAGE_API = """[image_api]
auth_type = password
auth_url = http://127.0.0.1:1/v3
username = cacheraw
password = secret
project_name = service
user_domain_name = Default
project_domain_name = Default
"""


def test_build_wires_the_given_store_to_the_cacher_and_the_converter(conf, tmp_path):
    path = tmp_path / "cacheraw.conf"
    path.write_text(IMAGE_API)
    conf(["--config-file", str(path)])
    store = FakeStore()
    queued = []
    built = core.build(conf, store=store, enqueue=queued.append)
    assert isinstance(built, cacher.Cacher)
    assert built.store is store
    assert built.converter.store is store
    assert built.conf is conf
