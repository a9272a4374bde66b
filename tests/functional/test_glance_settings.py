"""The settings of Glance that cacheraw needs, as cacheraw-manage check sees them on the stack:
the stack's Glance passes; a Glance restarted without them (stack.py glance-variant) is reported,
one line and its fix for each, with a non-zero exit."""

import shutil

import pytest

from tests.functional.conftest import STATE
from tests.functional.conftest import stack_cmd
from tests.functional.helpers import manage
from tests.image_client import ImageClient

GLANCE_CHECKS = ("Glance notifications", "Glance direct_url", "Glance protections",
                 "Glance image schema")


def check_lines(done):
    return {line.split(":")[0]: line for line in done.stdout.splitlines()}


def scratch_images(stack, sessions):
    admin = ImageClient(sessions["admin"], stack["glance"]["url"])
    images = admin.session.get(admin.url + "/images", params={"limit": 1000}).json()["images"]
    return [i["id"] for i in images if i["name"].startswith("cacheraw-check-")]


@pytest.fixture
def misconfigured_glance():
    """Glance without notifications, direct_url, property protections and cacheraw's image
    schema, as an operator may have left it; the stack's own Glance again afterwards."""
    schema = STATE / "glance" / "schema-image.json"
    shutil.move(schema, schema.with_suffix(".away"))
    try:
        stack_cmd("glance-variant", "--set", "oslo_messaging_notifications.driver=noop",
                  "--set", "DEFAULT.show_image_direct_url=false",
                  "--set", "DEFAULT.property_protection_file=")
        yield
    finally:
        shutil.move(schema.with_suffix(".away"), schema)
        stack_cmd("glance-variant")


def test_the_stack_s_glance_passes_every_check(stack, sessions):
    done = manage(stack, "check")
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = check_lines(done)
    for name in GLANCE_CHECKS:
        assert " OK: " in lines[name], lines[name]
    assert scratch_images(stack, sessions) == []


def test_each_missing_glance_setting_is_reported_with_its_fix(misconfigured_glance, stack,
                                                              sessions):
    done = manage(stack, "check")
    print(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = check_lines(done)
    assert "FAILED: no notification on exchange glance within 10 s" in \
        lines["Glance notifications"]
    assert "driver = messagingv2" in lines["Glance notifications"]
    assert "FAILED: the image service shows no direct_url" in lines["Glance direct_url"]
    assert "set [DEFAULT] show_image_direct_url = True" in lines["Glance direct_url"]
    assert "FAILED: " in lines["Glance protections"]
    assert "any member may write cache_raw_status" in lines["Glance protections"]
    assert "property_protection_file" in lines["Glance protections"]
    assert "FAILED: the image schema lacks cache_raw, " in lines["Glance image schema"]
    assert "schema-image.json" in lines["Glance image schema"]
    # The rest of the configuration is still good, and said so.
    for name in ("ceph", "image API write", "message bus"):
        assert " OK: " in lines[name], lines[name]
    assert "Traceback" not in done.stdout + done.stderr
    assert scratch_images(stack, sessions) == []
