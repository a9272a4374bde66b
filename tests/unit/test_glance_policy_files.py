"""etc/glance/: the image schema accepts exactly what cacheraw.properties accepts, and the
property protections keep cacheraw's properties to the service user."""

import configparser
import itertools
import json
import re
from pathlib import Path

import jsonschema
import pytest
from oslo_utils import strutils

from cacheraw import properties

GLANCE = Path(__file__).resolve().parents[2] / "etc/glance"
SCHEMA = json.loads((GLANCE / "schema-image.json").read_text())

BOOL_WORDS = [w for word in strutils.TRUE_STRINGS + strutils.FALSE_STRINGS
              for w in (word, word.upper(), word.capitalize())]
SAMPLES = (BOOL_WORDS + ["", " True", "True ", "maybe", "2", "-1", "00", "0400", "1e3", "400.0",
                         "rbd", "file", "RBD", "swift", "Queued", "Caching", "Cached", "Error",
                         "cached"]
           + [str(n) for n in itertools.chain(range(0, 130), range(790, 1010, 7), [99999])])
PARSERS = {
    "cache_raw": properties.parse_bool,
    "sw_wrs_auto_recovery": properties.parse_bool,
    "hw_wrs_live_migration_timeout": properties.parse_migration_timeout,
    "hw_wrs_live_migration_max_downtime": properties.parse_migration_max_downtime,
    "store": lambda v: v if v in properties.STORES else None,
    "cache_raw_status": lambda v: v if v in properties.STATUSES else None,
}


def schema_accepts(name, value):
    try:
        jsonschema.validate(value, SCHEMA[name])
    except jsonschema.ValidationError:
        return False
    return True


def test_schema_names_the_user_facing_properties():
    assert set(SCHEMA) == set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_schema_and_properties_agree(name):
    for value in SAMPLES:
        assert schema_accepts(name, value) == (PARSERS[name](value) is not None), value
        own = [p for p in properties.problems({name: value}) if p.startswith(name + " is ")]
        assert schema_accepts(name, value) == (not own), value
    assert not schema_accepts(name, 400)


def protections():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(GLANCE / "property-protections.conf")
    return parser


def first_matching_section(name):
    parser = protections()
    return next(parser[s] for s in parser.sections() if re.search(s, name))


@pytest.mark.parametrize("name", ["cache_raw_status", "cache_raw_url", "cache_raw_size",
                                  "cache_raw_error", "store"])
def test_only_the_service_writes_cacheraws_properties(name):
    section = first_matching_section(name)
    assert section["read"] == "@"
    for action in ("create", "update", "delete"):
        assert set(section[action].split(",")) == {"admin", "service"}


@pytest.mark.parametrize("name", ["cache_raw", "sw_wrs_auto_recovery",
                                  "hw_wrs_live_migration_timeout", "cache_raw_status_note",
                                  "os_distro", "stores"])
def test_everything_else_is_open(name):
    section = first_matching_section(name)
    assert all(section[action] == "@" for action in ("create", "read", "update", "delete"))


def test_nobody_may_touch_the_probe_of_cacheraw_manage_check():
    section = first_matching_section(properties.PROTECTION_PROBE)
    assert all(section[action] == "!" for action in ("create", "read", "update", "delete"))
