"""Images with the same data share one cache: which cached image has the data of another.

"The same data" is decided only by what the image service computed from the bytes it stored:
a secure ``os_hash_algo`` (never md5 alone), ``os_hash_value``, ``size`` and ``disk_format``
all equal, and both images ``active``; nothing an image's owner can set counts. The image found
must be ``Cached`` with a valid cache in this pool (``cache_valid``). README: "Identical images"
says why sharing cannot hand a member data they could not read.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterator, Optional, Protocol, Tuple

from cacheraw import exception
from cacheraw import properties

LOG = logging.getLogger(__name__)

SAME = ("os_hash_algo", "os_hash_value", "size", "disk_format")
_HEX = re.compile(r"[0-9a-f]+")


class ImageLister(Protocol):
    """What the finder asks of the image API (cacheraw.image_api.ImageAPI)."""

    def list(self, **filters: Any) -> Iterator[dict]: ...


class Mode(properties.StrEnum):
    """[converter] share_identical."""
    CLONE = "clone"
    COPY = "copy"
    OFF = "off"


def fingerprint(image: dict) -> Optional[Tuple[Any, ...]]:
    """What the image service computed of an active image's stored bytes, or None when it
    cannot tell whether another image has the same data."""
    algo = image.get("os_hash_algo")
    value = image.get("os_hash_value")
    size = image.get("size")
    if image.get("status") != "active" or algo not in properties.SECURE_HASHES \
            or not isinstance(value, str) or len(value) != properties.SECURE_HASHES[algo] \
            or not _HEX.fullmatch(value) or not isinstance(size, int) or size <= 0:
        return None
    return tuple(image.get(key) for key in SAME)


def same_data(image: dict, other: dict) -> bool:
    """Whether two different images hold the same data, as the image service hashed it."""
    mine = fingerprint(image)
    return mine is not None and image.get("id") != other.get("id") \
        and fingerprint(other) == mine


class Finder:
    """Finds, through the image API, a cached image with the data of another."""

    def __init__(self, mode: str, images: ImageLister, cache_valid: Callable[[dict], bool]):
        self.mode = Mode(mode)
        self.images = images
        self.cache_valid = cache_valid

    def twin(self, image: dict) -> Optional[dict]:
        """An image other than ``image`` with the same data and a valid cache in this pool, or
        None (always None when sharing is off)."""
        if self.mode == Mode.OFF or fingerprint(image) is None:
            return None
        try:
            for other in self._same_hash(image["os_hash_value"]):
                if properties.valid_id(other.get("id")) and same_data(image, other) \
                        and self.cache_valid(other):
                    return other
        except exception.CephBlocklisted:
            raise
        except exception.CacherawError as exc:
            # Not finding one costs a conversion, nothing else.
            LOG.warning("Image %s: could not look for an image with the same data: %s",
                        image["id"], exc)
        return None

    def _same_hash(self, value: str) -> Iterator[dict]:
        """The images whose os_hash_value is ``value``, hidden ones too (the image API filters
        its list by it)."""
        for hidden in ("false", "true"):
            yield from self.images.list(os_hash_value=value, os_hidden=hidden)
