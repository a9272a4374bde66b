"""The removal of a cache: under its lease when the image is deleted, or by a conversion that
found its image gone; a removed cache may free a trashed one it shared data with, which the
purge of the trash (here, for the sweep too) removes.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

from cacheraw import exception
from cacheraw import properties

LOG = logging.getLogger(__name__)

DELETED = exception.ImageDeleted("image deleted")


def forget(store: Any, image_id: str,
           cancel: Callable[[str, exception.ConversionAborted], None]) -> None:
    """The image is deleted (the image API says so): stop its conversion here (``cancel``) and
    remove its cache, under its lease."""
    cancel(image_id, DELETED)
    try:
        with store.conversion_lock(image_id) as lease:
            removed = remove(store, image_id, lease) == "removed"
    except exception.LockBusy:
        # Its converter finds the image gone when it publishes, and removes the cache.
        LOG.info("Image %s deleted while another worker converts it", image_id)
        return
    if removed:
        # It may have been the last clone of a trashed cache whose data it shared: purge that
        # one now rather than at the next sweep.
        purge_trash(store)


def remove(store: Any, image_id: str, lease: Any) -> str:
    """Remove the image's cache under ``lease``: what the store did ("removed", "trashed",
    "absent")."""
    outcome: str = store.remove(properties.cache_name(image_id), lease=lease)
    if outcome == "trashed":
        LOG.info("Image %s: cache has clones; moved to the trash until they are gone", image_id)
    elif outcome == "removed":
        LOG.info("Image %s: cache removed", image_id)
    return outcome


def purge_trash(store: Any) -> List[str]:
    """Purge the trashed caches whose last clone is gone, each logged: the names purged. A
    purge that Ceph refuses is a warning and purges nothing (the next sweep tries again)."""
    try:
        purged: List[str] = store.purge_trash()
    except exception.CacherawError as exc:
        LOG.warning("Could not purge the trash: %s", exc)
        return []
    for name in purged:
        LOG.info("Purged cache %s: its last clone is gone", name)
    return purged
