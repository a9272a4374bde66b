"""The local stack is the real thing: Keystone, Glance on Ceph, notifications on RabbitMQ."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import rbd


def upload(images, path, **fields):
    fields.setdefault("disk_format", "qcow2")
    image = images.create(**fields)
    images.upload(image["id"], path)
    return images.wait(image["id"], lambda i: i["status"] == "active", what="active")


def test_demo_user_uploads_qcow2_with_cache_raw(demo_images, qcow2):
    image = upload(demo_images, qcow2, cache_raw="True")
    assert image["cache_raw"] == "True"
    assert image["size"] == os.path.getsize(qcow2)
    assert image["direct_url"].startswith("rbd://")


def test_upload_notification_carries_cache_raw(demo_images, qcow2, notifications):
    image = upload(demo_images, qcow2, cache_raw="True")
    payload = notifications.wait_for_event("image.upload", image["id"])
    assert payload["properties"]["cache_raw"] == "True"
    assert payload["disk_format"] == "qcow2"


def test_image_data_in_ceph_readable_as_cacheraw_user(demo_images, qcow2, ceph, stack):
    image = upload(demo_images, qcow2)
    fsid = stack["ceph"]["fsid"]
    assert image["direct_url"] == "rbd://%s/images/%s/snap" % (fsid, image["id"])
    with rbd.Image(ceph, image["id"], snapshot="snap", read_only=True) as data:
        assert data.is_protected_snap("snap")
        assert data.read(0, data.size()) == qcow2.read_bytes()


def test_only_the_service_user_writes_cache_properties(demo_images, service_images, qcow2):
    image = upload(demo_images, qcow2, cache_raw="True")
    op = [{"op": "add", "path": "/cache_raw_status", "value": "Queued"}]
    assert demo_images.patch(image["id"], op, raise_exc=False).status_code == 403
    assert service_images.patch(image["id"], op).status_code == 200
    assert demo_images.get(image["id"])["cache_raw_status"] == "Queued"
    # every other property still behaves as in a default Glance
    other = [{"op": "add", "path": "/sw_wrs_auto_recovery", "value": "False"}]
    assert demo_images.patch(image["id"], other).status_code == 200


def test_demo_user_cannot_create_image_with_cache_status(demo_images):
    response = demo_images.session.post(
        demo_images.url + "/images", raise_exc=False,
        json={"name": "x", "disk_format": "qcow2", "container_format": "bare",
              "cache_raw_status": "Cached"})
    assert response.status_code == 403


def test_openstack_cli_with_demo_openrc(stack, qcow2, tmp_path):
    script = ("source %s/demo-openrc && openstack image create --disk-format qcow2 "
              "--container-format bare --property cache_raw=True --file %s cli-image "
              "-f value -c status" % (stack["state_dir"], qcow2))
    env = dict(os.environ, PATH=os.path.dirname(os.sys.executable) + ":" + os.environ["PATH"])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "active"


@pytest.mark.parametrize("event", ["image.upload"])
def test_worker_logs_image_events(start_worker, demo_images, qcow2, event):
    worker = start_worker()
    image = upload(demo_images, qcow2, cache_raw="True")
    worker.wait_for_log(image["id"])
    worker.wait_for_log("%s" % event)
    assert worker.stop() == 0
    assert "stopped" in worker.log()


def test_no_secret_reaches_the_worker_log_even_in_debug(start_worker, demo_images, qcow2, stack):
    worker = start_worker(extra_args=("--debug",))
    image = upload(demo_images, qcow2, cache_raw="True")
    worker.wait_for_log(image["id"])
    time.sleep(2)
    worker.stop()
    log = worker.log()
    secrets = [user["password"] for user in stack["keystone"]["users"].values()]
    secrets.append(stack["rabbitmq"]["transport_url"].split(":")[2].split("@")[0])
    with open(stack["ceph"]["users"]["cacheraw"]["keyring"]) as f:
        secrets.append(f.read().split("key = ")[1].split()[0])
    for secret in secrets:
        assert secret not in log


def test_keystone_glance_and_cinder_share_a_mariadb(stack, sessions):
    databases = stack["mariadb"]["databases"]
    assert sorted(databases) == ["cinder", "glance", "keystone"]
    assert all(url.startswith("mysql+pymysql://") for url in databases.values())
    for name in ("keystone", "glance", "cinder"):
        conf = next((Path(stack["state_dir"]) / name).glob("*.conf")).read_text()
        assert "connection = %s\n" % databases[name] in conf
    # Glance runs several API workers on it, as in production.
    gunicorn = (Path(stack["state_dir"]) / "glance" / "gunicorn.conf.py").read_text()
    assert "workers = 2" in gunicorn


def test_cinder_volume_services_are_up_with_cacheraw_s_driver(stack):
    script = "source %s/admin-openrc && openstack volume service list -f json" % (
        stack["state_dir"])
    env = dict(os.environ, PATH=os.path.dirname(os.sys.executable) + ":" + os.environ["PATH"])
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    services = {(s["Binary"], s["Host"].split("@")[-1]): s["State"]
                for s in json.loads(done.stdout)}
    assert services[("cinder-scheduler", "cacheraw-stack")] == "up"
    for backend in stack["cinder"]["backends"]:
        assert services[("cinder-volume", backend)] == "up"
    conf = (Path(stack["state_dir"]) / "cinder" / "cinder.conf").read_text()
    assert "volume_driver = cacheraw.cinder.driver.CacheRawRBDDriver\n" in conf
