"""Log lines about an image name it."""

import logging
import types

from cacheraw import retry


def test_a_retry_names_the_image_it_is_about(caplog):
    conf = types.SimpleNamespace(worker=types.SimpleNamespace(
        retry_attempts=2, retry_initial_delay=0, retry_max_delay=0))
    calls = []

    class Flaky(Exception):
        pass

    class API:
        def get(self, image_id):
            calls.append(image_id)
            if len(calls) == 1:
                raise Flaky("busy")
            return image_id

    image_id = "5c7f6f9e-0f0e-4d1c-9d43-7d1b1f0f6a11"
    with caplog.at_level(logging.WARNING, logger="cacheraw.retry"):
        assert retry.policy(conf, Flaky)(API.get, API(), image_id) == image_id
    (record,) = caplog.records
    assert image_id in record.getMessage()
    assert "API.get" in record.getMessage() and "busy" in record.getMessage()
