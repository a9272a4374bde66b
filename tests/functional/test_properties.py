"""What the real Glance, with etc/glance/ (property protections and schema-image.json), enforces
for each property of the extension, on create (POST) and on update (PATCH), and that
cacheraw.properties.problems reports every invalid value, including those Glance lets through.
"""

import uuid

import pytest

from cacheraw import properties

OK, BAD, FORBIDDEN = 201, 400, 403  # PATCH answers 200 where POST answers 201

FSID = "840f16bc-3238-4adb-8700-6b9876c23462"
SOME_ID = "9d34ff07-6f66-4107-9363-e38b0b559a67"

# (property, value, who writes it, what Glance answers, valid for cacheraw.properties)
CASES = [
    ("cache_raw", "True", "demo", OK, True),
    ("cache_raw", "false", "demo", OK, True),
    ("cache_raw", "yes", "demo", OK, True),
    ("cache_raw", "maybe", "demo", BAD, False),
    ("cache_raw", " True", "demo", BAD, False),
    ("cache_raw", True, "demo", BAD, False),
    ("sw_wrs_auto_recovery", "False", "demo", OK, True),
    ("sw_wrs_auto_recovery", "0", "demo", OK, True),
    ("sw_wrs_auto_recovery", "disabled", "demo", BAD, False),
    ("hw_wrs_live_migration_timeout", "0", "demo", OK, True),
    ("hw_wrs_live_migration_timeout", "120", "demo", OK, True),
    ("hw_wrs_live_migration_timeout", "400", "demo", OK, True),
    ("hw_wrs_live_migration_timeout", "800", "demo", OK, True),
    ("hw_wrs_live_migration_timeout", "119", "demo", BAD, False),
    ("hw_wrs_live_migration_timeout", "801", "demo", BAD, False),
    ("hw_wrs_live_migration_timeout", "-1", "demo", BAD, False),
    ("hw_wrs_live_migration_timeout", "abc", "demo", BAD, False),
    ("hw_wrs_live_migration_timeout", 400, "demo", BAD, False),
    ("hw_wrs_live_migration_max_downtime", "100", "demo", OK, True),
    ("hw_wrs_live_migration_max_downtime", "350", "demo", OK, True),
    ("hw_wrs_live_migration_max_downtime", "100000", "demo", OK, True),
    ("hw_wrs_live_migration_max_downtime", "99", "demo", BAD, False),
    ("hw_wrs_live_migration_max_downtime", "0", "demo", BAD, False),
    ("hw_wrs_live_migration_max_downtime", "1e3", "demo", BAD, False),
    ("store", "rbd", "cacheraw", OK, True),
    ("store", "file", "cacheraw", OK, True),
    ("store", "swift", "cacheraw", BAD, False),
    ("store", "rbd", "demo", FORBIDDEN, True),
    ("cache_raw_status", "Queued", "cacheraw", OK, True),
    ("cache_raw_status", "Caching", "cacheraw", OK, True),
    ("cache_raw_status", "NotNeeded", "cacheraw", OK, True),
    ("cache_raw_status", "Done", "cacheraw", BAD, False),
    ("cache_raw_status", "cached", "cacheraw", BAD, False),
    ("cache_raw_status", "Queued", "demo", FORBIDDEN, True),
    # Not in the schema: Glance takes any string from the service user; cacheraw.properties
    # is what tells a wrong one.
    ("cache_raw_size", "41126400", "cacheraw", OK, True),
    ("cache_raw_size", "41 MB", "cacheraw", OK, False),
    ("cache_raw_size", "1", "demo", FORBIDDEN, True),
    ("cache_raw_url", "rbd://%s/images/%s_raw/snap" % (FSID, SOME_ID), "cacheraw", OK, True),
    ("cache_raw_url", "http://example.invalid/raw", "cacheraw", OK, False),
    ("cache_raw_error", "two\nlines", "cacheraw", OK, False),
    ("cache_raw_error", "why", "demo", FORBIDDEN, True),
]


@pytest.fixture(scope="module")
def clients(stack, sessions):
    from tests.image_client import ImageClient
    made = {name: ImageClient(sessions[name], stack["glance"]["url"])
            for name in ("demo", "cacheraw")}
    created = []
    yield made, created
    for who, image_id in created:
        made[who].delete(image_id, raise_exc=False)


def create(clients, who, extra):
    made, created = clients
    body = {"name": "props-%s" % uuid.uuid4().hex[:8], "container_format": "bare",
            "disk_format": "qcow2", **extra}
    response = made[who].session.post(made[who].url + "/images", json=body, raise_exc=False)
    if response.status_code == 201:
        created.append((who, response.json()["id"]))
    return response


def rule_problems(name, value):
    """problems() about this property itself (not about its companions)."""
    image = {"id": SOME_ID, name: value}
    return [p for p in properties.problems(image) if p.startswith(name + " is ")]


def case_id(case):
    return "%s=%r-%s" % case[:3]


@pytest.mark.parametrize("name, value, who, answer, valid", CASES,
                         ids=[case_id(c) for c in CASES])
def test_on_create(clients, name, value, who, answer, valid):
    response = create(clients, who, {name: value})
    assert response.status_code == answer, response.text
    assert bool(rule_problems(name, value)) is (not valid)
    if answer == OK:
        assert clients[0][who].get(response.json()["id"])[name] == value


@pytest.mark.parametrize("name, value, who, answer, valid", CASES,
                         ids=[case_id(c) for c in CASES])
def test_on_patch(clients, name, value, who, answer, valid):
    base = create(clients, who, {})
    assert base.status_code == OK, base.text
    image_id = base.json()["id"]
    response = clients[0][who].patch(image_id, [{"op": "add", "path": "/" + name,
                                                 "value": value}], raise_exc=False)
    assert response.status_code == (200 if answer == OK else answer), response.text
    image = clients[0][who].get(image_id)
    if answer == OK:
        assert image[name] == value
        # What Glance stored is what cacheraw.properties judges.
        assert bool(rule_problems(name, image[name])) is (not valid)
    else:
        assert name not in image


def test_members_read_what_the_service_wrote(clients):
    made, _ = clients
    response = create(clients, "demo", {"cache_raw": "True"})
    image_id = response.json()["id"]
    made["cacheraw"].patch(image_id, [{"op": "add", "path": "/cache_raw_status",
                                       "value": "Queued"}])
    assert made["demo"].get(image_id)["cache_raw_status"] == "Queued"
    removal = made["demo"].patch(image_id, [{"op": "remove", "path": "/cache_raw_status"}],
                                 raise_exc=False)
    assert removal.status_code == FORBIDDEN
    assert made["demo"].get(image_id)["cache_raw_status"] == "Queued"


def test_the_schema_shows_the_extension(clients):
    made, _ = clients
    schema = made["demo"].session.get(made["demo"].url + "/schemas/image").json()
    for name in ("cache_raw", "sw_wrs_auto_recovery", "hw_wrs_live_migration_timeout",
                 "hw_wrs_live_migration_max_downtime", "store", "cache_raw_status"):
        assert schema["properties"][name]["type"] == "string"
    assert schema["properties"]["cache_raw_status"]["enum"] == list(properties.STATUSES)
