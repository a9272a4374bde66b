"""cacheraw-manage check of Glance's settings: what each answer of the image service and the bus
means, with the image API and the bus faked (the real ones: tests/functional/
test_glance_settings.py)."""

import contextlib
import json
from pathlib import Path

import pytest

from cacheraw import check
from cacheraw import exception
from cacheraw import messaging
from cacheraw import properties

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
SCHEMA = {"properties": dict({name: {"type": "string"} for name in check.SCHEMA_PROPERTIES},
                             cache_raw_status={"enum": list(properties.STATUSES)})}


class FakeAPI:
    def __init__(self, schema=SCHEMA, refused=True):
        self.schema = schema
        self.refused = refused

    def image_schema(self):
        return self.schema

    @contextlib.contextmanager
    def scratch_image(self, data=None):
        yield {"id": ID}

    def property_refused(self, image_id, name):
        assert name == properties.PROTECTION_PROBE
        return self.refused


@pytest.fixture
def api(monkeypatch):
    fake = FakeAPI()
    monkeypatch.setattr(check.image_api_checks, "checks", lambda conf: fake)
    return fake


def test_a_schema_with_every_property_and_status_passes(conf, api):
    assert "every cache_raw_status" in check.check_schema(conf)


def test_a_schema_of_an_earlier_release_names_the_missing_status(conf, api):
    api.schema = json.loads(json.dumps(SCHEMA))
    api.schema["properties"]["cache_raw_status"]["enum"].remove("NotNeeded")
    with pytest.raises(exception.ConfigError, match="lacks cache_raw_status value NotNeeded: "
                                                    "copy cacheraw's etc/glance/schema-image"):
        check.check_schema(conf)


def test_glance_s_own_schema_names_every_property(conf, api):
    api.schema = {"properties": {"name": {}, "disk_format": {}}}
    with pytest.raises(exception.ConfigError) as caught:
        check.check_schema(conf)
    assert ", ".join(check.SCHEMA_PROPERTIES) in str(caught.value)


def test_protections_in_force_refuse_the_probe(conf, api):
    assert "in force" in check.check_protections(conf)
    api.refused = False
    with pytest.raises(exception.ConfigError, match="any member may write cache_raw_status; "
                                                    "set property_protection_file"):
        check.check_protections(conf)


def test_the_schema_check_knows_the_schema_file():
    schema_file = Path(__file__).resolve().parents[2] / "etc/glance/schema-image.json"
    assert set(check.SCHEMA_PROPERTIES) == set(json.loads(schema_file.read_text()))


@pytest.mark.parametrize("body,wanted", [
    ({"oslo.version": "2.0", "oslo.message": json.dumps(
        {"event_type": "image.create", "payload": {"id": ID}})}, ("image.create", ID)),
    ({"event_type": "image.update", "payload": {"id": ID}}, ("image.update", ID)),
    ({"oslo.message": "{not json"}, (None, None)),
    ({"event_type": "image.upload", "payload": "upload failed"}, ("image.upload", None)),
    (["a list"], (None, None)),
])
def test_a_notification_s_event_and_image(body, wanted):
    assert messaging._event_of(body) == wanted


@pytest.fixture
def bus_conf(conf):
    messaging.oslo_messaging.get_notification_transport(conf, url="fake:/").cleanup()
    return conf


def test_the_broker_url_quotes_the_credentials(bus_conf):
    conf = bus_conf
    conf.set_override("transport_url", "rabbit://us%40r:p%2Fss@10.0.0.1:5672,"
                      "us%40r:p%2Fss@10.0.0.2:5673/openstack")
    assert messaging._broker_urls(conf) == (
        "amqp://us%40r:p%2Fss@10.0.0.1:5672/openstack;amqp://us%40r:p%2Fss@10.0.0.2:5673/"
        "openstack")


def test_only_rabbit_can_be_watched(bus_conf):
    conf = bus_conf
    conf.set_override("transport_url", "fake:/")
    with pytest.raises(exception.ConfigError, match="only rabbit:// can be watched"):
        messaging._broker_urls(conf)


def test_the_watch_uses_the_worker_s_tls_options(bus_conf):
    conf = bus_conf
    messaging.oslo_messaging.get_notification_transport(conf, url="rabbit://h/").cleanup()
    assert messaging._tls_options(conf) is False
    conf.set_override("ssl", True, group="oslo_messaging_rabbit")
    assert messaging._tls_options(conf) is True
    conf.set_override("ssl_ca_file", "/etc/ssl/ca.pem", group="oslo_messaging_rabbit")
    assert messaging._tls_options(conf) == {"ca_certs": "/etc/ssl/ca.pem"}


NAMES = ["config", "converter", "ceph", "image API endpoint", "image API write", "message bus",
         "Glance notifications", "Glance direct_url", "Glance protections", "Glance image schema"]
FUNCTIONS = {"converter": "check_converter", "image API endpoint": "check_endpoint",
             "image API write": "check_image_write", "message bus": "check_bus",
             "Glance notifications": "check_notifications", "Glance direct_url": "check_locations",
             "Glance protections": "check_protections", "Glance image schema": "check_schema"}


def test_every_check_runs_in_order_and_a_failure_is_one_line(conf, monkeypatch):
    ran = []

    def passes(name):
        return lambda conf: ran.append(name) or "%s fine" % name

    def fails(conf):
        ran.append("ceph")
        raise exception.CephUnavailable("cannot connect:\n  timed out after 15 s")

    for name, function in FUNCTIONS.items():
        monkeypatch.setattr(check, function, passes(name))
    monkeypatch.setattr(check, "check_ceph", fails)
    results = check.run_all(conf)
    assert [name for name, _, _ in results] == NAMES
    assert ran == NAMES[1:]
    assert results[2] == ("ceph", False, "cannot connect: timed out after 15 s")
    assert all(passed for name, passed, _ in results if name != "ceph")


def test_the_config_check_names_the_files_it_parsed(conf, tmp_path):
    assert check.check_config(conf) == "parsed no config file"
    path = tmp_path / "cacheraw.conf"
    path.write_text("[worker]\n")
    conf(["--config-file", str(path)])
    assert check.check_config(conf) == "parsed %s" % path
