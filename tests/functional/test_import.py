"""Images that arrive through Glance's interoperable import (POST /v2/images/{id}/import), on
the real stack: glance-direct, web-download from a web server on 127.0.0.1, copy-image into the
stack's second store, and Glance's image_conversion plugin (a stack variant of Glance).

Glance 26 (2023.1) to 33 send the same events for an import (their notifier and import flow
send them alike): image.update for each step of the task (status uploading, importing), then
image.prepare, image.upload and image.activate whose payloads say "active" while the image API
still says "importing" (the task saves the image after them), then image.update once the image
is saved active. cacheraw reads the image at each event it listens to and acts on the one
whose image the image API shows active."""

import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.functional.conftest import stack_cmd
from tests.functional.helpers import FAST
from tests.functional.helpers import assert_cache_matches
from tests.functional.helpers import conversions
from tests.functional.helpers import names_in_pool
from tests.functional.helpers import openstack
from tests.functional.helpers import upload
from tests.functional.helpers import wait_status
from tests.functional.helpers import wait_until
from tests.image_client import ImageClient


@pytest.fixture
def worker(start_worker):
    return start_worker(extra_conf=FAST)


@pytest.fixture
def admin_images(stack, sessions):
    return ImageClient(sessions["admin"], stack["glance"]["url"])


def import_image(images, image_id, method, **body):
    body["method"] = method if isinstance(method, dict) else {"name": method}
    return images.session.post(images.url + "/images/%s/import" % image_id, json=body,
                               raise_exc=False)


def active(images, image_id, timeout=120):
    image = images.wait(image_id, lambda i: i["status"] in ("active", "killed", "deleted")
                        or i.get("os_glance_failed_import"), timeout, what="active")
    assert image["status"] == "active", image
    return image


def events_of(notifications, image_id, until, timeout=60):
    """The (event type, image status) of the notifications about ``image_id``, until
    ``until(event_type, payload)`` holds for one of them."""
    last = notifications.wait_for(lambda kind, payload: payload.get("id") == image_id
                                  and until(kind, payload), timeout,
                                  "the events of image %s" % image_id)
    return [(kind, payload.get("status")) for when, kind, payload in notifications.seen
            if isinstance(payload, dict) and payload.get("id") == image_id and when <= last[0]]


def test_glance_direct_through_the_cli_is_cached(worker, demo_images, qcow2, ceph, tmp_path,
                                                 notifications):
    done = openstack("image", "create", "--import", "--file", str(qcow2), "--disk-format",
                     "qcow2", "--container-format", "bare", "--property", "cache_raw=True",
                     "imported-%s" % uuid.uuid4().hex[:8], "-f", "json")
    image_id = json.loads(done.stdout)["id"]
    seen = events_of(notifications, image_id,
                     lambda kind, p: kind == "image.update" and p.get("status") == "active")
    # image.upload and image.activate say "active" before the import task saved the image
    # (the image API still says "importing"); the event cacheraw acts on is the image.update
    # that follows the save.
    assert seen[-1] == ("image.update", "active"), seen
    assert ("image.upload", "active") in seen and ("image.activate", "active") in seen, seen
    active(demo_images, image_id)
    wait_status(demo_images, image_id, "Cached")
    assert_cache_matches(ceph, image_id, qcow2, tmp_path)
    assert conversions(worker.log(), image_id) == 1


@pytest.fixture
def web_server(stack, tmp_path):
    """A web server on 127.0.0.1 serving tmp_path/www, on the one port the stack's Glance
    accepts for web-download: a process of its own (a server thread in the tests' process would
    stall there once a library of another test monkey-patched it for eventlet)."""
    root = tmp_path / "www"
    root.mkdir()
    port = stack["glance"]["web_download_port"]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               "--directory", str(root), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("the web server", lambda: _listening(port), 30)
        yield root, "http://127.0.0.1:%d" % port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _listening(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_web_download_from_a_local_web_server_is_cached(worker, demo_images, qcow2, ceph,
                                                        tmp_path, web_server):
    root, url = web_server
    (root / "disk.qcow2").write_bytes(qcow2.read_bytes())
    image = demo_images.create(disk_format="qcow2", cache_raw="True")
    response = import_image(demo_images, image["id"], {"name": "web-download",
                                                       "uri": url + "/disk.qcow2"})
    assert response.status_code == 202, response.text
    active(demo_images, image["id"])
    wait_status(demo_images, image["id"], "Cached")
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert conversions(worker.log(), image["id"]) == 1


def test_web_download_from_another_host_or_port_is_still_refused(demo_images, stack):
    image = demo_images.create(disk_format="qcow2", cache_raw="True")
    for uri in ("http://127.0.0.1:%d/disk.qcow2" % (stack["glance"]["web_download_port"] + 1),
                "http://127.0.0.2:%d/disk.qcow2" % stack["glance"]["web_download_port"]):
        response = import_image(demo_images, image["id"], {"name": "web-download",
                                                           "uri": uri})
        assert response.status_code == 400, (uri, response.text)
        assert "does not pass filtering" in response.text


def test_copy_image_into_the_second_store_keeps_the_cache(worker, demo_images, admin_images,
                                                          qcow2, ceph, tmp_path):
    image = upload(demo_images, qcow2, cache_raw="True")
    cached = wait_status(demo_images, image["id"], "Cached")
    received = worker.log().count("Received image.update for image %s" % image["id"])
    response = import_image(admin_images, image["id"], "copy-image", stores=["local"])
    assert response.status_code == 202, response.text
    copied = admin_images.wait(image["id"], lambda i: "local" in i["stores"].split(","),
                               timeout=120, what="a copy in store local")
    assert copied["status"] == "active"
    # The worker handled the copy's image.update events (a positive marker) and left the
    # cache as it was.
    deadline = time.monotonic() + 30
    while worker.log().count("Received image.update for image %s" % image["id"]) <= received:
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.2)
    after = demo_images.get(image["id"])
    for key in ("cache_raw_status", "cache_raw_url", "cache_raw_size"):
        assert after[key] == cached[key]
    assert after["direct_url"] == image["direct_url"]  # still read from the pool
    assert_cache_matches(ceph, image["id"], qcow2, tmp_path)
    assert conversions(worker.log(), image["id"]) == 1


@pytest.fixture
def converting_glance():
    """Glance with its image_conversion import plugin on, converting every import to raw."""
    stack_cmd("glance-variant",
              "--set", "image_import_opts.image_import_plugins=[image_conversion]",
              "--set", "image_conversion.output_format=raw")
    yield
    stack_cmd("glance-variant")


def test_an_image_the_conversion_plugin_made_raw_needs_no_cache(converting_glance, worker,
                                                                demo_images, qcow2, ceph):
    image = demo_images.create(disk_format="qcow2", cache_raw="True")
    with open(qcow2, "rb") as f:
        demo_images.session.put(demo_images.url + "/images/%s/stage" % image["id"], data=f,
                                headers={"Content-Type": "application/octet-stream"})
    response = import_image(demo_images, image["id"], "glance-direct")
    assert response.status_code == 202, response.text
    done = active(demo_images, image["id"])
    assert done["disk_format"] == "raw"
    seen = wait_status(demo_images, image["id"], "NotNeeded")
    assert not {"cache_raw_error", "cache_raw_url", "cache_raw_size"} & set(seen)
    assert image["id"] + "_raw" not in names_in_pool(ceph)
