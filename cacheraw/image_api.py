"""The image API (Glance v2), reached through keystoneauth1 as the cacheraw service user.

HTTP and Keystone errors are translated into cacheraw.exception here; transient ones are retried
with the one retry policy (cacheraw.retry).
"""

import functools
import hashlib
import logging
import os
import uuid

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading

from cacheraw import exception
from cacheraw import properties
from cacheraw import retry

LOG = logging.getLogger(__name__)

GROUP = "image_api"
PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
CHUNK = 1024 * 1024
PAGE = 200
SCRATCH_IMAGE_PREFIX = "cacheraw-check-"
# A PATCH refused for a reason that repeating it cannot mend (413: the image's property quota is
# reached; 400: a value the image schema refuses; 403: a role that may not write it).
REFUSED_UPDATE = (400, 403, 413)


def _translate(exc, image_id=None):
    about = " (image %s)" % image_id if image_id else ""
    if isinstance(exc, ks_exc.NotFound):
        return exception.ImageNotFound("image %s not found" % image_id)
    if isinstance(exc, (ks_exc.ConnectionError, ks_exc.DiscoveryFailure,
                        ks_exc.EndpointNotFound)):
        return exception.ImageAPIUnavailable("cannot reach the image API%s: %s" % (about, exc))
    if isinstance(exc, ks_exc.HttpError) and (exc.http_status or 0) >= 500:
        return exception.ImageAPIUnavailable("image API error%s: %s" % (about, exc))
    return exception.ImageAPIError("image API refused a request%s: %s" % (about, exc))


def calls_api(func):
    """Translate keystoneauth errors, then retry the transient ones."""
    @functools.wraps(func)
    def translated(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except ks_exc.ClientException as exc:
            raise _translate(exc, args[0] if args else None) from exc

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        return self._retry(translated, self, *args, **kwargs)
    return wrapper


def patch_ops(image, wanted):
    """JSON-patch operations that give ``image`` the properties in ``wanted``
    (a value of None removes the property)."""
    ops = []
    for name, value in wanted.items():
        if value is None:
            if name in image:
                ops.append({"op": "remove", "path": "/" + name})
        elif name not in image:
            ops.append({"op": "add", "path": "/" + name, "value": value})
        elif image[name] != value:
            ops.append({"op": "replace", "path": "/" + name, "value": value})
    return ops


def apply_ops(image, ops):
    """The image as the JSON-patch ``ops`` of patch_ops() make it."""
    changed = dict(image)
    for op in ops:
        if op["op"] == "remove":
            changed.pop(op["path"][1:], None)
        else:
            changed[op["path"][1:]] = op["value"]
    return changed


class ImageAPI:
    # cacheraw-manage's hook: before_patch(image_id, ops) is told of each patch update() is
    # about to send; when it returns False the patch is not sent (a dry run).
    before_patch = None

    def __init__(self, conf):
        self._options = conf.image_api
        try:
            auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        except ks_exc.ClientException as exc:
            raise exception.ConfigError("[image_api] auth options: %s"
                                        % exception.one_line(exc)) from exc
        if auth is None:
            raise exception.ConfigError("[image_api] has no auth_type: cacheraw cannot "
                                        "authenticate to the image API")
        session = ks_loading.load_session_from_conf_options(conf, GROUP, auth=auth)
        self._api = ks_loading.load_adapter_from_conf_options(conf, GROUP, session=session,
                                                              auth=auth)
        self._retry = retry.policy(conf, exception.ImageAPIUnavailable)

    def _url(self, path):
        return "/v2" + path

    @calls_api
    def get(self, image_id):
        return self._api.get(self._url("/images/%s" % image_id)).json()

    @calls_api
    def list_page(self, marker=None, **filters):
        """One page of images and the marker of the next one (None after the last): Glance
        says there is a next page with a ``next`` link, whatever the page's length (it caps
        the page size at its api_limit_max)."""
        params = dict(filters, limit=PAGE)
        if marker:
            params["marker"] = marker
        body = self._api.get(self._url("/images"), params=params).json()
        images = body["images"]
        return images, (images[-1]["id"] if body.get("next") and images else None)

    def list(self, **filters):
        """Every image the user sees (an admin sees all), page after page."""
        marker = None
        while True:
            page, marker = self.list_page(marker, **filters)
            yield from page
            if marker is None:
                return

    @calls_api
    def update(self, image_id, wanted, only_if=None):
        """Set (or, for None, remove) the properties in ``wanted``. Returns the new image.

        The patch is computed from the image as read just before it (again at each retry), so
        that it never writes back a value read long ago. With ``only_if``, the patch is made only
        when ``only_if(image)`` holds for that fresh image.
        """
        image = self._api.get(self._url("/images/%s" % image_id)).json()
        if only_if is not None and not only_if(image):
            return image
        ops = patch_ops(image, wanted)
        if not ops:
            return image
        if self.before_patch is not None and self.before_patch(image_id, ops) is False:
            return apply_ops(image, ops)
        LOG.debug("Image %s: patch %s", image_id, ops)
        try:
            return self._api.patch(self._url("/images/%s" % image_id), json=ops,
                                   headers={"Content-Type": PATCH_TYPE}).json()
        except ks_exc.HttpError as exc:
            if exc.http_status in REFUSED_UPDATE:
                raise exception.ImageUpdateRefused(
                    "image API refused to update image %s (%s): %s"
                    % (image_id, exc.http_status, exc)) from exc
            raise

    @calls_api
    def download(self, image_id, path, expected_size, checksums, check=None):
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

    # -- cacheraw-manage check: each does the real thing once and leaves nothing behind

    def _keystone_reason(self, exc):
        options = self._options
        if isinstance(exc, ks_exc.Unauthorized):
            return "Keystone at %s refused the credentials of user %s" % (
                getattr(options, "auth_url", "?"), getattr(options, "username", "?"))
        if isinstance(exc, ks_exc.ConnectionError):
            return "cannot reach %s: %s" % (getattr(options, "auth_url", "?"),
                                            exception.one_line(exc))
        return exception.one_line(exc)

    def check_endpoint(self):
        """The image API's URL, and where it comes from, once it answers a listing."""
        try:
            url = self._api.get_endpoint()
        except ks_exc.ClientException as exc:
            raise exception.ImageAPIUnavailable(self._keystone_reason(exc)) from exc
        if not url:
            raise exception.ConfigError(
                "no %s endpoint (interfaces %s, region %s) in the Keystone catalog; set "
                "[image_api] endpoint_override" % (
                    self._options.service_type, ", ".join(self._options.valid_interfaces or []),
                    self._options.region_name or "any"))
        source = "endpoint_override" if self._options.endpoint_override else \
            "the Keystone catalog"
        try:
            self._api.get(self._url("/images"), params={"limit": 1})
        except ks_exc.ClientException as exc:
            raise exception.ImageAPIUnavailable("%s (from %s) does not answer: %s" % (
                url, source, exception.one_line(exc))) from exc
        return "%s (from %s)" % (url, source)

    def check_write(self):
        """The service user may write cache_raw_*: tried on a scratch image of its own
        (private, no data), deleted again in every outcome."""
        user = getattr(self._options, "username", "?")
        try:
            image = self._api.post(self._url("/images"), json={
                "name": SCRATCH_IMAGE_PREFIX + uuid.uuid4().hex[:12], "visibility": "private",
                "disk_format": "qcow2", "container_format": "bare"}).json()
        except ks_exc.ClientException as exc:
            raise exception.ImageAPIError("user %s cannot create a scratch image: %s" % (
                user, self._keystone_reason(exc))) from exc
        wanted = {properties.STATUS: properties.Status.ERROR,
                  properties.ERROR: "written by cacheraw-manage check"}
        try:
            self._api.patch(self._url("/images/%s" % image["id"]), json=patch_ops({}, wanted),
                            headers={"Content-Type": PATCH_TYPE})
        except ks_exc.ClientException as exc:
            raise exception.ImageAPIError("user %s may not write %s: %s" % (
                user, properties.STATUS, exception.one_line(exc))) from exc
        finally:
            try:
                self._api.delete(self._url("/images/%s" % image["id"]))
            except ks_exc.ClientException:
                pass
        return "user %s may write %s (on a scratch image, deleted again)" % (
            user, properties.STATUS)
