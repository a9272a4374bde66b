"""Outages of the image API, the message bus and Ceph in the middle of the work: every requested
image still ends cached, and converted once."""

import os
import signal
import time
from pathlib import Path

from tests.functional.test_caching import conversions
from tests.functional.test_caching import upload
from tests.functional.test_caching import wait_status

QUICK_RETRIES = ("[worker]\nsweep_interval = 2\nretry_attempts = 2\nretry_initial_delay = 0.5\n"
                 "retry_max_delay = 1\n[ceph]\nlock_duration = 10\n")


def paused_qemu_img(tmp_path, seconds):
    path = tmp_path / "paused-qemu-img"
    path.write_text("#!/bin/sh\nif [ \"$1\" = convert ]; then sleep %d; fi\n"
                    "exec qemu-img \"$@\"\n" % seconds)
    path.chmod(0o755)
    return path


def test_image_api_outage_while_converting(start_worker, demo_images, qcow2, tmp_path, outage):
    worker = start_worker(extra_conf=QUICK_RETRIES + "[converter]\nqemu_img = %s\n"
                          % paused_qemu_img(tmp_path, 4))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    outage("glance")
    worker.wait_for_log("caching failed", timeout=60)  # the conversion is done, Glance is not
    outage.start("glance")
    wait_status(demo_images, image["id"], "Cached", timeout=60)
    log = worker.log()
    assert conversions(log, image["id"]) == 1
    assert "Image %s: found a finished cache" % image["id"] in log


def test_ceph_pause_while_converting(start_worker, demo_images, qcow2, tmp_path, stack):
    worker = start_worker(extra_conf=QUICK_RETRIES + "[converter]\nqemu_img = %s\n"
                          % paused_qemu_img(tmp_path, 2))
    image = upload(demo_images, qcow2, cache_raw="True")
    wait_status(demo_images, image["id"], "Caching")
    osd = int(Path(stack["state_dir"], "pids", "ceph-osd.pid").read_text())
    os.killpg(osd, signal.SIGSTOP)
    try:
        time.sleep(6)
    finally:
        os.killpg(osd, signal.SIGCONT)
    wait_status(demo_images, image["id"], "Cached", timeout=90)
    assert conversions(worker.log(), image["id"]) == 1
