"""cacheraw-manage check's questions to the image API, which the daemon never asks: does its
endpoint answer, may the service user write the cache's properties, does Glance refuse a
protected property, what is its image schema. Each does the real thing once, on a scratch image
of the service user's when it writes, and leaves nothing behind.

Each check says in one line what Keystone or the image API refused, through the ImageAPI's
CheckingAdapter, whose failures are cacheraw's (cacheraw.image_api alone talks to keystoneauth1).
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Optional

from oslo_config import cfg

from cacheraw import exception
from cacheraw import image_api
from cacheraw import properties


def checks(conf: cfg.ConfigOpts) -> ImageAPIChecks:
    """The checks, through an ImageAPI made from ``conf`` as the daemon makes it."""
    api = image_api.ImageAPI(conf)
    return ImageAPIChecks(api.adapter, api.options)


class ImageAPIChecks:
    """The checks over ``adapter`` (the image API's, for them) with ``options`` (the
    [image_api] group, which names the user and Keystone in the messages)."""

    def __init__(self, adapter: image_api.CheckingAdapter, options: Any) -> None:
        self.adapter = adapter
        self.options = options

    def _keystone_reason(self, exc: exception.ImageAPIRequestFailed) -> str:
        """What Keystone refused, naming its URL and the user, when it was Keystone."""
        options = self.options
        if exc.kind == "unauthorized":
            return "Keystone at %s refused the credentials of user %s" % (
                getattr(options, "auth_url", "?"), getattr(options, "username", "?"))
        if exc.kind == "unreachable":
            return "cannot reach %s: %s" % (getattr(options, "auth_url", "?"),
                                            exception.one_line(exc))
        return exception.one_line(exc)

    def check_endpoint(self) -> str:
        """The image API's URL, and where it comes from, once it answers a listing."""
        try:
            url = self.adapter.get_endpoint()
        except exception.ImageAPIRequestFailed as exc:
            raise exception.ImageAPIUnavailable(self._keystone_reason(exc)) from exc
        if not url:
            raise exception.ConfigError(
                "no %s endpoint (interfaces %s, region %s) in the Keystone catalog; set "
                "[image_api] endpoint_override" % (
                    self.options.service_type, ", ".join(self.options.valid_interfaces or []),
                    self.options.region_name or "any"))
        source = "endpoint_override" if self.options.endpoint_override else \
            "the Keystone catalog"
        try:
            self.adapter.get(image_api.url("/images"), params={"limit": 1})
        except exception.ImageAPIRequestFailed as exc:
            raise exception.ImageAPIUnavailable("%s (from %s) does not answer: %s" % (
                url, source, exception.one_line(exc))) from exc
        return "%s (from %s)" % (url, source)

    @contextlib.contextmanager
    def scratch_image(self, data: Optional[bytes] = None) -> Iterator[dict]:
        """A private scratch image of the service user, as the image API shows it once made
        (with ``data``, bytes, uploaded as a raw image); deleted again in every outcome."""
        user = getattr(self.options, "username", "?")
        try:
            image = self.adapter.post(image_api.url("/images"), json={
                "name": properties.scratch_name(), "visibility": "private",
                "disk_format": "raw" if data else "qcow2", "container_format": "bare"}).json()
        except exception.ImageAPIRequestFailed as exc:
            raise exception.ImageAPIError("user %s cannot create a scratch image: %s" % (
                user, self._keystone_reason(exc))) from exc
        try:
            if data:
                self.adapter.put(image_api.url("/images/%s/file" % image["id"]), data=data,
                                 headers={"Content-Type": "application/octet-stream"})
                image = self.adapter.get(image_api.url("/images/%s" % image["id"])).json()
            yield image
        except exception.ImageAPIRequestFailed as exc:
            raise exception.ImageAPIError("scratch image %s: %s" % (
                image["id"], exception.one_line(exc))) from exc
        finally:
            try:
                self.adapter.delete(image_api.url("/images/%s" % image["id"]))
            except exception.ImageAPIRequestFailed:
                pass

    def check_write(self) -> str:
        """The service user may write cache_raw_*: tried on a scratch image of its own
        (private, no data), deleted again in every outcome."""
        user = getattr(self.options, "username", "?")
        wanted = {properties.STATUS: properties.Status.ERROR,
                  properties.ERROR: "written by cacheraw-manage check"}
        with self.scratch_image() as image:
            try:
                self._add(image["id"], wanted)
            except exception.ImageAPIRequestFailed as exc:
                raise exception.ImageAPIError("user %s may not write %s: %s" % (
                    user, properties.STATUS, exception.one_line(exc))) from exc
        return "user %s may write %s (on a scratch image, deleted again)" % (
            user, properties.STATUS)

    def property_refused(self, image_id: str, name: str) -> bool:
        """Whether the image API refuses (403) to set the property ``name`` on the image."""
        try:
            self._add(image_id, {name: "1"})
        except exception.ImageAPIRequestFailed as exc:
            if exc.kind == "forbidden":
                return True
            raise exception.ImageAPIError("setting %s on scratch image %s: %s" % (
                name, image_id, exception.one_line(exc))) from exc
        return False

    def _add(self, image_id: str, wanted: Dict[str, Any]) -> None:
        """Add the properties ``wanted`` to an image that has none of them yet."""
        self.adapter.patch(image_api.url("/images/%s" % image_id),
                           json=image_api.patch_ops({}, wanted),
                           headers={"Content-Type": image_api.PATCH_TYPE})

    def image_schema(self) -> dict:
        """The image API's schema of an image (GET /v2/schemas/image)."""
        try:
            schema: dict = self.adapter.get(image_api.url("/schemas/image")).json()
            return schema
        except (exception.ImageAPIRequestFailed, ValueError) as exc:
            raise exception.ImageAPIError("cannot read the image schema: %s"
                                          % exception.one_line(exc)) from exc
