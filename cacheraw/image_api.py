"""The image API (Glance v2), reached through keystoneauth1 as the cacheraw service user.

HTTP and Keystone errors are translated into cacheraw.exception here; transient ones are retried
with the one retry policy (cacheraw.retry). What cacheraw-manage check alone asks of the image
API is in cacheraw.image_api_checks, over this module's adapter.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cachetools
from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from cacheraw import exception
from cacheraw import metrics
from cacheraw import retry

LOG = logging.getLogger(__name__)

GROUP = "image_api"
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
CHUNK = 1024 * 1024
PAGE = 200
# Images remembered as last read or written, so that a write needs no read before it.
REMEMBERED = 1024
# A write whose patch no longer fits the image (HTTP 409) is computed again from a fresh read.
CONFLICT_ATTEMPTS = 3
# The properties cacheraw writes, and the one it acts on.
OWN_PROPERTIES = ("cache_raw", "cache_raw_status", "cache_raw_url", "cache_raw_size",
                  "cache_raw_error", "store")
# A PATCH refused for a reason that repeating it cannot mend (413: the image's property quota is
# reached; 400: a value the image schema refuses; 403: a role that may not write it).
REFUSED_UPDATE = (400, 403, 413)

# A JSON-patch operation: {"op": ..., "path": ..., "value": ...}.
Op = Dict[str, Any]
# update()'s only_if: whether the image as read is to be patched.
Condition = Callable[[dict], bool]


def _translate(exc: BaseException, image_id: Optional[str] = None) -> exception.CacherawError:
    about = " (image %s)" % image_id if image_id else ""
    if isinstance(exc, ks_exc.NotFound):
        return exception.ImageNotFound("image %s not found" % image_id)
    if isinstance(exc, (ks_exc.ConnectionError, ks_exc.DiscoveryFailure,
                        ks_exc.EndpointNotFound)):
        return exception.ImageAPIUnavailable("cannot reach the image API%s: %s" % (about, exc))
    if isinstance(exc, ks_exc.HttpError) and (exc.http_status or 0) >= 500:
        return exception.ImageAPIUnavailable("image API error%s: %s" % (about, exc))
    return exception.ImageAPIError("image API refused a request%s: %s" % (about, exc))


# Keystone's errors become ours, and the transient ones are retried (cacheraw.retry).
calls_api = retry.boundary(
    ks_exc.ClientException, lambda self, exc, args: _translate(exc, args[0] if args else None))


def url(path: str) -> str:
    """The URL, relative to the image API's endpoint, of ``path`` in its version 2."""
    return "/v2" + path


def patch_ops(image: dict, wanted: Dict[str, Any]) -> List[Op]:
    """JSON-patch operations that give ``image`` the properties in ``wanted``
    (a value of None removes the property)."""
    ops: List[Op] = []
    for name, value in wanted.items():
        if value is None:
            if name in image:
                ops.append({"op": "remove", "path": "/" + name})
        elif name not in image:
            ops.append({"op": "add", "path": "/" + name, "value": value})
        elif image[name] != value:
            ops.append({"op": "replace", "path": "/" + name, "value": value})
    return ops


def apply_ops(image: dict, ops: List[Op]) -> dict:
    """The image as the JSON-patch ``ops`` of patch_ops() make it."""
    changed = dict(image)
    for op in ops:
        if op["op"] == "remove":
            changed.pop(op["path"][1:], None)
        else:
            changed[op["path"][1:]] = op["value"]
    return changed


class _CountingAdapter:
    """The keystoneauth1 adapter, counting each request in the metrics."""

    def __init__(self, api: adapter.Adapter):
        self._adapter = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def request(self, url: str, method: str, **kwargs: Any) -> Any:
        metrics.image_api_request(method)
        return self._adapter.request(url, method, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request(url, "GET", **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Any:
        return self.request(url, "PATCH", **kwargs)


def failure_kind(exc: ks_exc.ClientException) -> str:
    """How a request failed, in exception.ImageAPIRequestFailed's words."""
    if isinstance(exc, ks_exc.Unauthorized):
        return "unauthorized"
    if isinstance(exc, ks_exc.ConnectionError):
        return "unreachable"
    if isinstance(exc, ks_exc.Forbidden):
        return "forbidden"
    return "other"


class CheckingAdapter:
    """An adapter to the image API whose requests fail with
    exception.ImageAPIRequestFailed instead of keystoneauth1's errors: the operator's checks
    word each failure without importing keystoneauth1."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Callable[..., Any]:
        call = getattr(self._api, name)

        def translated(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except ks_exc.ClientException as exc:
                raise exception.ImageAPIRequestFailed(exception.one_line(exc),
                                                      failure_kind(exc)) from exc
        return translated


class _Remembered:
    """The last version of each image read or written here (an LRU map, under a lock), and
    whether it is the answer to a write of ours."""

    def __init__(self, size: int = REMEMBERED):
        self._images: cachetools.LRUCache[str, Tuple[dict, bool]] = \
            cachetools.LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def put(self, image: dict, written: bool = False) -> dict:
        """Remember ``image``; a read that finds the image as our last write left it keeps
        that write recognisable."""
        with self._lock:
            before, was_written = self._images.pop(image["id"], (None, False))
            written = written or (was_written and before == image)
            self._images[image["id"]] = (image, written)
        return image

    def get(self, image_id: str) -> Optional[dict]:
        with self._lock:
            return self._images.get(image_id, (None, False))[0]

    def written(self, image_id: str) -> Optional[dict]:
        """The image as our last write left it, unless it was read again since."""
        with self._lock:
            image, written = self._images.get(image_id, (None, False))
        return image if written else None


def _conditional_ops(image: dict, wanted: Dict[str, Any],
                     only_if: Optional[Condition],
                     only_if_absent: Optional[str]) -> List[Op]:
    """patch_ops() of ``wanted``, or none when a condition of update() does not hold."""
    if (only_if is not None and not only_if(image)) or \
            (only_if_absent is not None and only_if_absent in image):
        return []
    return patch_ops(image, wanted)


def shows(payload: dict, image: dict) -> bool:
    """Whether a notification's payload shows ``image`` (the image API's view of it): every
    field and property the payload has is the image's, and so is every cache property."""
    props = payload.get("properties")
    if not isinstance(props, dict) or not payload.get("updated_at"):
        return False
    top = {k: v for k, v in payload.items() if k != "properties" and k in image}
    if "updated_at" not in top:
        return False
    return (all(image[k] == v for k, v in top.items())
            and all(image.get(k) == v for k, v in props.items())
            and all(props.get(k) == image.get(k) for k in OWN_PROPERTIES))


class ImageAPI:
    # cacheraw-manage's hook: before_patch(image_id, ops) is told of each patch update() is
    # about to send; when it returns False the patch is not sent (a dry run).
    before_patch: Optional[Callable[[str, List[Op]], Any]] = None

    def __init__(self, conf: cfg.ConfigOpts):
        self.options = conf.image_api
        try:
            auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        except ks_exc.ClientException as exc:
            raise exception.ConfigError("[image_api] auth options: %s"
                                        % exception.one_line(exc)) from exc
        if auth is None:
            raise exception.ConfigError("[image_api] has no auth_type: cacheraw cannot "
                                        "authenticate to the image API")
        session = ks_loading.load_session_from_conf_options(conf, GROUP, auth=auth)
        self._api = _CountingAdapter(ks_loading.load_adapter_from_conf_options(
            conf, GROUP, session=session, auth=auth))
        self._seen = _Remembered()
        self._retry = retry.policy(conf, exception.ImageAPIUnavailable)

    @property
    def adapter(self) -> CheckingAdapter:
        """The adapter to the image API for the operator's checks (cacheraw.image_api_checks),
        which ask the image API things the daemon never does."""
        return CheckingAdapter(self._api)

    def _url(self, path: str) -> str:
        return url(path)

    @calls_api
    def get(self, image_id: str) -> dict:
        return self._get(image_id)

    def _get(self, image_id: str) -> dict:
        return self._seen.put(self._api.get(self._url("/images/%s" % image_id)).json())

    def own_write(self, image_id: str) -> Optional[dict]:
        """The image as our last write left it, or None if it was read changed since."""
        return self._seen.written(image_id)

    def shows_own_write(self, image_id: str, payload: object) -> bool:
        """Whether an image.update notification shows the image as our last write left it."""
        image = self._seen.written(image_id)
        return image is not None and isinstance(payload, dict) and shows(payload, image)

    @calls_api
    def list_page(self, marker: Optional[str] = None,
                  **filters: Any) -> Tuple[List[dict], Optional[str]]:
        """One page of images and the marker of the next one (None after the last): Glance
        says there is a next page with a ``next`` link, whatever the page's length (it caps
        the page size at its api_limit_max)."""
        params = dict(filters, limit=PAGE)
        if marker:
            params["marker"] = marker
        body = self._api.get(self._url("/images"), params=params).json()
        images: List[dict] = body["images"]
        return images, (images[-1]["id"] if body.get("next") and images else None)

    def list(self, **filters: Any) -> Iterator[dict]:
        """Every image the user sees (an admin sees all), page after page."""
        marker = None
        while True:
            page, marker = self.list_page(marker, **filters)
            yield from page
            if marker is None:
                return

    @calls_api
    def update(self, image_id: str, wanted: Dict[str, Any], only_if: Optional[Condition] = None,
               only_if_absent: Optional[str] = None, lease: Any = None) -> dict:
        """Set (or, for None, remove) the properties in ``wanted``. Returns the new image.

        The patch is computed from the image as this process last read or wrote it, without
        reading it again: its operations (add a missing property, replace or remove an existing
        one) fail with a conflict when that property appeared or went meanwhile, and the patch
        is then computed again from a fresh read. A patch that would change nothing is decided
        on a fresh read. With ``only_if``, the image is read first and patched only when
        ``only_if(image)`` holds for it. With ``only_if_absent`` (a property that ``wanted``
        sets), the patch is made only while the image lacks that property: its add operation
        fails when the property is there, so that no read is needed before it. With ``lease``,
        every attempt and every patch asks it first (LockLost once it is lost).
        """
        if only_if_absent is not None and wanted.get(only_if_absent) is None:
            raise ValueError("only_if_absent must name a property that the patch sets")
        image: Optional[dict] = self._seen.get(image_id) if only_if is None else None
        conflicts = 0
        while True:
            fresh = image is None
            if image is None:
                image = self._get(image_id)
            ops = _conditional_ops(image, wanted, only_if, only_if_absent)
            if not ops:
                if fresh:
                    return image
                image = None
                continue
            if self.before_patch is not None and self.before_patch(image_id, ops) is False:
                return apply_ops(image, ops)
            if lease is not None:
                lease.check()
            patched = self._patch(image_id, ops)
            if patched is not None:
                return patched
            conflicts += 1
            if conflicts >= CONFLICT_ATTEMPTS:
                raise exception.ImageAPIError("image %s kept changing under its patch"
                                              % image_id)
            image = None

    def _patch(self, image_id: str, ops: List[Op]) -> Optional[dict]:
        """The patched image, or None when the patch conflicts with a change made meanwhile."""
        LOG.debug("Image %s: patch %s", image_id, ops)
        try:
            return self._seen.put(self._api.patch(
                self._url("/images/%s" % image_id), json=ops,
                headers={"Content-Type": PATCH_TYPE}).json(), written=True)
        except ks_exc.Conflict:
            LOG.debug("Image %s changed under the patch; reading it again", image_id)
            return None
        except ks_exc.HttpError as exc:
            if exc.http_status in REFUSED_UPDATE:
                raise exception.ImageUpdateRefused(
                    "image API refused to update image %s (%s): %s"
                    % (image_id, exc.http_status, exc)) from exc
            raise

    @calls_api
    def download(self, image_id: str, path: str, expected_size: Optional[int],
                 checksums: Sequence[Tuple[str, str]],
                 check: Optional[Callable[[], None]] = None) -> int:
        """Stream the image's data into ``path`` and verify it. ``checksums`` is a list of
        (hashlib algorithm name, hex digest) recorded by the image service; ``check()`` is
        called between chunks and may raise to stop the download (a cancelled conversion)."""
        response = self._api.get(self._url("/images/%s/file" % image_id), stream=True)
        hashes = [(hashlib.new(algo), digest) for algo, digest in checksums]
        written = 0
        try:
            with open(path, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                for chunk in response.iter_content(CHUNK):
                    if check is not None:
                        check()
                    written += len(chunk)
                    if expected_size is not None and written > expected_size:
                        raise exception.UnsafeImage(
                            "the image service sent more than the %d bytes the image has"
                            % expected_size)
                    for h, _ in hashes:
                        h.update(chunk)
                    f.write(chunk)
        finally:
            response.close()
        if expected_size is not None and written != expected_size:
            raise exception.ImageAPIUnavailable("download of image %s stopped at %d of %d bytes"
                                                % (image_id, written, expected_size))
        for h, digest in hashes:
            if h.hexdigest() != digest:
                raise exception.UnsafeImage("image data does not match its recorded %s checksum"
                                            % h.name)
        return written
