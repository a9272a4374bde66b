"""What the tests that run inside a Nova virtual environment share: Nova's configuration, read
once, and the rbd_utils module whose Ceph bindings the fakes replace."""

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nova.conf
    from nova.storage import rbd_utils  # noqa: F401 - Nova's own import of rados and rbd

CONF = nova.conf.CONF


@pytest.fixture(scope="session", autouse=True)
def nova_conf():
    CONF([], project="nova")
    return CONF


@pytest.fixture
def flags(nova_conf):
    """CONF.set_override for one test, as Nova's own tests' self.flags()."""
    set_here = []

    def flag(group=None, **values):
        for name, value in values.items():
            nova_conf.set_override(name, value, group=group)
            set_here.append((name, group))
    yield flag
    for name, group in set_here:
        nova_conf.clear_override(name, group=group)
