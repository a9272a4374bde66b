"""What the tests that run inside a Nova virtual environment share: Nova's configuration, as
Nova's own tests set it (its ConfFixture, overrides undone after each test)."""

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nova.conf
    from nova.tests import fixtures as nova_fixtures

CONF = nova.conf.CONF


@pytest.fixture
def flags():
    """CONF.set_override for one test, as Nova's own tests' self.flags()."""
    conf = nova_fixtures.ConfFixture(CONF)
    conf.setUp()

    def flag(group=None, **values):
        for name, value in values.items():
            CONF.set_override(name, value, group=group)
    yield flag
    conf.cleanUp()
