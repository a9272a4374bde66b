"""What an image asks of cacheraw, read from the image and the options alone (no I/O): whether it
wants a cache, why it cannot have one, what its status says of an earlier failure, where its
data lives.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from cacheraw import properties
from cacheraw.properties import ERROR
from cacheraw.properties import SIZE
from cacheraw.properties import STATUS
from cacheraw.properties import URL
from cacheraw.properties import Status

RAW_REASON = "image is already raw; clone it directly"
# What a raw image that asks for a cache says: no cache, and nothing of an earlier one.
NOT_NEEDED_PROPS = {STATUS: Status.NOT_NEEDED, ERROR: None, URL: None, SIZE: None}
TRANSIENT_RE = re.compile(r"^temporary failure \(attempt (\d+) of (\d+)\)")


def wants_cache(image: dict) -> bool:
    """An active image whose cache_raw is true (a value that is not a boolean string, such as
    " True", counts as not set, and is warned about as invalid)."""
    return image.get("status") == "active" and properties.cache_raw(image)


def error_props(message: str) -> Dict[str, Optional[str]]:
    """The properties of an image whose cache failed or was refused with ``message``."""
    return {STATUS: Status.ERROR, ERROR: message, URL: None, SIZE: None}


def transient_attempt(image: dict) -> Optional[int]:
    """The attempt number of a transient Error, or None for any other status."""
    if image.get(STATUS) != Status.ERROR:
        return None
    match = TRANSIENT_RE.match(image.get(ERROR) or "")
    return int(match.group(1)) if match else None


def refusal(conf: Any, image: dict) -> Optional[str]:
    """Why an image that asks for a cache cannot have one ([converter]
    allowed_source_formats), or None."""
    disk_format = image.get("disk_format")
    allowed = conf.converter.allowed_source_formats
    if disk_format not in allowed:
        return "disk_format %s is not converted here (allowed: %s)" % (
            disk_format, ", ".join(allowed))
    return None


def store_fix(image: dict) -> Dict[str, str]:
    """``{"store": ...}`` when the image's ``store`` is missing or not where its data lives,
    else {}."""
    location = image.get("direct_url") or ""
    store = ("rbd" if location.startswith("rbd://")
             else "file" if location.startswith("file://") else None)
    if image.get("status") == "active" and store and image.get("store") != store:
        return {"store": store}
    return {}
