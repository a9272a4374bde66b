"""With [metrics] enabled, the worker's /metrics counts a real conversion."""

from tests.functional.helpers import FAST
from tests.functional.helpers import free_port
from tests.functional.helpers import scrape
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until

CACHED = 'cacheraw_conversions_total{result="cached"}'


def between(logs, text, count):
    """The log read just before and just after a scrape bound what the scrape counted."""
    return logs[0].count(text) <= count <= logs[1].count(text)


def test_a_conversion_is_counted(start_worker, demo_images, qcow2):
    port = free_port()
    worker = start_worker(extra_conf=FAST + "[metrics]\nenabled = true\nport = %d\n" % port)
    worker.wait_for_log("Metrics on http://127.0.0.1:%d/metrics" % port)

    image = upload(demo_images, qcow2, cache_raw="True")
    cached = wait_status(demo_images, image["id"], "Cached")
    # The conversion is counted once it has ended, just after `Cached` is recorded.
    wait_until("the conversion counted", lambda: scrape(port).get(CACHED, 0) >= 1, 10)

    # A fresh worker counts from zero, but its start-up sweep may also convert images that
    # other tests left behind: its log says how many.
    logs = [worker.log()]
    samples = scrape(port)
    logs.append(worker.log())
    assert between(logs, ": cached as ", samples[CACHED])
    assert between(logs, ": converted to RAW in ", samples["cacheraw_conversion_seconds_count"])
    assert samples["cacheraw_conversion_seconds_sum"] > 0
    assert samples["cacheraw_read_bytes_total"] >= image["size"]
    assert samples["cacheraw_written_bytes_total"] >= int(cached["cache_raw_size"])
    assert "cacheraw_queue_depth" in samples
    assert samples["cacheraw_last_sweep_timestamp_seconds"] > 0


def test_metrics_are_off_by_default(start_worker):
    worker = start_worker()
    assert "Metrics on" not in worker.log()
