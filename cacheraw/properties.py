"""The image properties of the StarlingX image API extensions: their rules, and the values a
consumer derives from them.

Glance stores extra properties as strings. The user writes ``cache_raw``,
``sw_wrs_auto_recovery``, ``hw_wrs_live_migration_timeout`` and
``hw_wrs_live_migration_max_downtime``; the system writes ``store``; cacheraw alone writes the
``cache_raw_*`` properties. ``problems(image)`` says, one sentence per property, what breaks the
rules; the ``parse_*`` functions read a value (None when it is missing or invalid) and the
``effective_*`` functions give what a live migration must use when the image and its flavor
both may say something.
"""

from __future__ import annotations

import enum
import re
import uuid
from typing import Callable, List, Optional, Tuple, TypeVar

from oslo_utils import strutils

CACHE_RAW = "cache_raw"
AUTO_RECOVERY = "sw_wrs_auto_recovery"
MIGRATION_TIMEOUT = "hw_wrs_live_migration_timeout"
MIGRATION_MAX_DOWNTIME = "hw_wrs_live_migration_max_downtime"
STORE = "store"
STATUS = "cache_raw_status"
URL = "cache_raw_url"
SIZE = "cache_raw_size"
ERROR = "cache_raw_error"

T = TypeVar("T")


class StrEnum(str, enum.Enum):
    """enum.StrEnum of Python 3.11, for 3.9 and 3.10: each member is its string, str() included."""
    __str__ = str.__str__
    # str's own, where Enum's would format the member's name on some Pythons.
    __format__ = str.__format__  # type: ignore[assignment]


class Status(StrEnum):
    """The values of ``cache_raw_status``; each member is its string."""
    QUEUED = "Queued"
    CACHING = "Caching"
    CACHED = "Cached"
    ERROR = "Error"
    # The image is raw itself: Cinder and Nova clone it directly, no cache is made.
    NOT_NEEDED = "NotNeeded"


STORES = ("rbd", "file")
STATUSES = tuple(Status)
# The values of an image's own ``status`` while the image API deletes it, or once it has.
DELETED_STATUSES = ("deleted", "pending_delete")
# The hashes the image API may record as ``os_hash_algo`` that no one can collide, each with
# the length of its digest in hex digits: what a download is verified against, and what says
# that two images hold the same data (cacheraw.identical).
SECURE_HASHES = {"sha256": 64, "sha384": 96, "sha512": 128}

CACHE_RAW_DEFAULT = False
AUTO_RECOVERY_DEFAULT = True
TIMEOUT_DISABLED = 0
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 120, 800, 800
DOWNTIME_MIN, DOWNTIME_DEFAULT = 100, 500

# A cache is the RBD image <image id>_raw in cacheraw's pool, cloned from its snapshot "snap".
CACHE_SUFFIX = "_raw"
CACHE_SNAP = "snap"
# The name of the scratch image (in the image API) and RBD image (in the pool) that
# cacheraw-manage check creates and removes again: this prefix and 12 hex digits.
SCRATCH_PREFIX = "cacheraw-check-"
# A property that Glance's property protections (etc/glance/property-protections.conf) refuse to
# everyone: cacheraw-manage check sets it to see that the protections are in force.
PROTECTION_PROBE = "cacheraw_protection_probe"

_WHOLE_NUMBER = re.compile(r"^(0|[1-9][0-9]*)$")
# Image ids name RBD images only once they match this: a lowercase UUID, nothing else.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_RE = re.compile(_UUID)
# The pool: a Ceph pool name as ``ceph osd pool create`` takes it, nothing that needs quoting.
_POOL = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
_CACHE_URL = re.compile(r"rbd://(%s)/(%s)/(%s)%s/%s" % (_UUID, _POOL, _UUID, CACHE_SUFFIX,
                                                       CACHE_SNAP))


# -- the names cacheraw gives its caches

def valid_id(image_id: object) -> bool:
    """True for an image id that may name something in Ceph: a lowercase UUID."""
    return isinstance(image_id, str) and _UUID_RE.fullmatch(image_id) is not None


def cache_name(image_id: str) -> str:
    return image_id + CACHE_SUFFIX


def scratch_name() -> str:
    return SCRATCH_PREFIX + uuid.uuid4().hex[:12]


def image_id_of(name: str) -> Optional[str]:
    """The image id of the cache ``name`` (the inverse of cache_name), or None when ``name`` is
    not ``<image uuid>_raw``."""
    if not name.endswith(CACHE_SUFFIX):
        return None
    image_id = name[:-len(CACHE_SUFFIX)]
    return image_id if valid_id(image_id) else None


def is_cache_name(name: str) -> bool:
    """True for ``<image uuid>_raw``: the only RBD images cacheraw ever removes unasked."""
    return image_id_of(name) is not None


def rbd_url(fsid: str, pool: str, name: str, snapshot: str = CACHE_SNAP) -> str:
    """glance_store's location of an RBD image's snapshot: rbd://<fsid>/<pool>/<name>/<snap>."""
    return "rbd://%s/%s/%s/%s" % (fsid, pool, name, snapshot)


def cache_url(fsid: str, pool: str, image_id: str) -> str:
    """Where the cache of ``image_id`` is: the value of cache_raw_url."""
    return rbd_url(fsid, pool, cache_name(image_id))


def parse_cache_url(value: object) -> Optional[Tuple[str, ...]]:
    """(fsid, pool, image id) of a cache_raw_url, as cache_url() makes it, else None. The whole
    value must match: no quoting, no trailing characters, lowercase UUIDs, a plain pool name."""
    match = _CACHE_URL.fullmatch(value) if isinstance(value, str) else None
    return match.groups() if match else None


# -- reading one value (None: missing or invalid)

def parse_bool(value: object) -> Optional[bool]:
    """True/False for a boolean string (``True``, ``false``, ``yes``, ``0``, ...), else None."""
    if not isinstance(value, str) or value != value.strip():
        return None
    try:
        return strutils.bool_from_string(value, strict=True)
    except ValueError:
        return None


def parse_whole_number(value: object) -> Optional[int]:
    """The integer of a string of digits (no sign, spaces or leading zeros; ints too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _WHOLE_NUMBER.match(value):
        return int(value)
    return None


def parse_migration_timeout(value: object) -> Optional[int]:
    """Seconds: 0 (disabled) or TIMEOUT_MIN..TIMEOUT_MAX, else None."""
    seconds = parse_whole_number(value)
    if seconds == TIMEOUT_DISABLED or (seconds is not None
                                        and TIMEOUT_MIN <= seconds <= TIMEOUT_MAX):
        return seconds
    return None


def parse_migration_max_downtime(value: object) -> Optional[int]:
    """Milliseconds, at least DOWNTIME_MIN, else None."""
    millis = parse_whole_number(value)
    return millis if millis is not None and millis >= DOWNTIME_MIN else None


# -- what a consumer uses

def cache_raw(image: dict) -> bool:
    return _or_default(parse_bool(image.get(CACHE_RAW)), CACHE_RAW_DEFAULT)


def needs_no_cache(image: dict) -> bool:
    """A raw image: consumers clone the image itself, so its cache status is NotNeeded."""
    return image.get("disk_format") == "raw"


def auto_recovery(image: dict) -> bool:
    return _or_default(parse_bool(image.get(AUTO_RECOVERY)), AUTO_RECOVERY_DEFAULT)


def effective_migration_timeout(flavor_value: object = None, image_value: object = None) -> int:
    """Seconds a live migration may take: the smaller of the flavor's and the image's values
    when both are set (so a 0 in either disables the timeout), the one set otherwise, 800 when
    neither is. 0 means no timeout. Invalid values count as not set."""
    values = [v for v in (parse_migration_timeout(flavor_value),
                          parse_migration_timeout(image_value)) if v is not None]
    return min(values) if values else TIMEOUT_DEFAULT


def effective_migration_max_downtime(flavor_value: object = None,
                                     image_value: object = None) -> int:
    """Milliseconds of downtime a live migration may cause: the flavor's value overrides the
    image's; 500 when neither is set. Invalid values count as not set."""
    for value in (flavor_value, image_value):
        millis = parse_migration_max_downtime(value)
        if millis is not None:
            return millis
    return DOWNTIME_DEFAULT


# -- the rules, one sentence per broken one

def _or_default(value: Optional[T], default: T) -> T:
    return default if value is None else value


def _bool_problem(value: str) -> Optional[str]:
    if parse_bool(value) is None:
        return "must be a boolean string such as 'True' or 'False'"
    return None


def _timeout_problem(value: str) -> Optional[str]:
    if parse_migration_timeout(value) is None:
        return ("must be '0' (no timeout) or a whole number of seconds from %d to %d"
                % (TIMEOUT_MIN, TIMEOUT_MAX))
    return None


def _downtime_problem(value: str) -> Optional[str]:
    if parse_migration_max_downtime(value) is None:
        return "must be a whole number of milliseconds, at least %d" % DOWNTIME_MIN
    return None


def _store_problem(value: str) -> Optional[str]:
    if value not in STORES:
        return "must be 'rbd' (Ceph) or 'file' (controller file system)"
    return None


def _status_problem(value: str) -> Optional[str]:
    if value not in STATUSES:
        return "must be one of %s" % ", ".join(STATUSES)
    return None


def _size_problem(value: str) -> Optional[str]:
    if not isinstance(value, str) or parse_whole_number(value) is None:
        return "must be a whole number of bytes"
    return None


def _error_problem(value: str) -> Optional[str]:
    if not isinstance(value, str) or "\n" in value or not value.strip():
        return "must be one line of text"
    return None


RULES: Tuple[Tuple[str, Callable[[str], Optional[str]]], ...] = (
    (CACHE_RAW, _bool_problem),
    (AUTO_RECOVERY, _bool_problem),
    (MIGRATION_TIMEOUT, _timeout_problem),
    (MIGRATION_MAX_DOWNTIME, _downtime_problem),
    (STORE, _store_problem),
    (STATUS, _status_problem),
    (SIZE, _size_problem),
    (ERROR, _error_problem),
)


def _url_problem(image: dict) -> Optional[str]:
    url = image.get(URL)
    if url is None:
        return None
    parts = parse_cache_url(url)
    if parts is None:
        return ("%s is %r: it must be rbd://<ceph fsid>/<pool>/<image id>_raw/snap"
                % (URL, url))
    if image.get("id") and parts[2] != image["id"]:
        return "%s is %r: it names another image than %s" % (URL, url, image["id"])
    return None


def _consistency_problems(image: dict) -> List[str]:
    status = image.get(STATUS)
    found: List[str] = []
    if status == Status.CACHED:
        found += ["%s is missing although %s is Cached" % (name, STATUS)
                  for name in (URL, SIZE) if image.get(name) is None]
    if status == Status.ERROR and image.get(ERROR) is None:
        found.append("%s is missing although %s is Error" % (ERROR, STATUS))
    if status == Status.NOT_NEEDED:
        found += ["%s is set although %s is NotNeeded" % (name, STATUS)
                  for name in (URL, SIZE, ERROR) if image.get(name) is not None]
    return found


def problems(image: dict) -> List[str]:
    """One sentence for each property of ``image`` that breaks the extension's rules; an empty
    list when all present properties are valid (a missing property is never a problem)."""
    found: List[str] = []
    for name, rule in RULES:
        if name in image and image[name] is not None:
            why = (rule(image[name]) if isinstance(image[name], str)
                   else "must be a string, as every extra property of an image")
            if why:
                found.append("%s is %r: it %s." % (name, image[name], why))
    url = _url_problem(image)
    if url:
        found.append(url + ".")
    found += [problem + "." for problem in _consistency_problems(image)]
    return found
