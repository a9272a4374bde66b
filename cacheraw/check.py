"""cacheraw-manage check: can this configuration work? Each check does the real thing once, as
the daemon would, and leaves nothing behind.
"""

import logging as std_logging
import os
import subprocess
import tempfile
import uuid

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading

from cacheraw import cacher
from cacheraw import exception
from cacheraw import image_api
from cacheraw import store as ceph_store

SCRATCH_IMAGE_PREFIX = "cacheraw-check-"


class CheckFailed(Exception):
    """A check did not pass; the message says precisely why."""


def run_all(conf):
    """[(name, passed, one line)] for each check, in order."""
    results = []
    for name, check in (("config", check_config), ("converter", check_converter),
                        ("ceph", check_ceph),
                        ("image API endpoint", check_endpoint),
                        ("image API write", check_image_write),
                        ("message bus", check_bus)):
        try:
            results.append((name, True, check(conf)))
        except CheckFailed as exc:
            results.append((name, False, str(exc)))
    return results


def check_config(conf):
    return "parsed %s" % (", ".join(conf.config_file) or "no config file")


def check_converter(conf):
    """qemu-img runs and has the rbd driver; the conversion directory can be written."""
    options = conf.converter
    try:
        help_text = subprocess.run([options.qemu_img, "--help"], capture_output=True,
                                   text=True, timeout=30, env={"LC_ALL": "C",
                                                               "PATH": os.environ.get("PATH", "")}
                                   ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise CheckFailed("cannot run %s: %s" % (options.qemu_img, exc)) from exc
    formats = next((line.split(":", 1)[1].split() for line in help_text.splitlines()
                    if line.startswith("Supported formats:")), [])
    if "rbd" not in formats:
        raise CheckFailed("%s has no rbd driver (install qemu-block-extra)" % options.qemu_img)
    directory = options.conversion_dir
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CheckFailed("cannot write in conversion_dir %s: %s" % (directory,
                                                                   exc.strerror)) from exc
    return "%s with the rbd driver; %s writable" % (options.qemu_img, directory)


def check_ceph(conf):
    store = ceph_store.CephStore(conf)
    try:
        store.connect()
        store.check_rbd_caps()
        space, _ = store.pool_space()
        fsid = store.fsid()
    except exception.CacherawError as exc:
        raise CheckFailed(cacher.one_line(exc)) from exc
    finally:
        store.close()
    return ("client.%s may create, snapshot, protect, unprotect and remove images and lock "
            "objects in pool %s (cluster %s, %d MiB free)"
            % (conf.ceph.user, conf.ceph.pool, fsid, space // (1024 * 1024)))


def _adapter(conf):
    try:
        auth = ks_loading.load_auth_from_conf_options(conf, image_api.GROUP)
    except ks_exc.ClientException as exc:
        raise CheckFailed("[image_api] auth options: %s" % cacher.one_line(exc)) from exc
    if auth is None:
        raise CheckFailed("[image_api] has no auth_type")
    session = ks_loading.load_session_from_conf_options(conf, image_api.GROUP, auth=auth)
    return ks_loading.load_adapter_from_conf_options(conf, image_api.GROUP, session=session,
                                                     auth=auth)


def _keystone_reason(conf, exc):
    group = conf.image_api
    if isinstance(exc, ks_exc.Unauthorized):
        return "Keystone at %s refused the credentials of user %s" % (
            getattr(group, "auth_url", "?"), getattr(group, "username", "?"))
    if isinstance(exc, ks_exc.ConnectionError):
        return "cannot reach %s: %s" % (getattr(group, "auth_url", "?"), cacher.one_line(exc))
    return cacher.one_line(exc)


def check_endpoint(conf):
    adapter = _adapter(conf)
    try:
        url = adapter.get_endpoint()
    except ks_exc.ClientException as exc:
        raise CheckFailed(_keystone_reason(conf, exc)) from exc
    if not url:
        raise CheckFailed("no %s endpoint (interfaces %s, region %s) in the Keystone catalog; "
                          "set [image_api] endpoint_override" % (
                              conf.image_api.service_type,
                              ", ".join(conf.image_api.valid_interfaces or []),
                              conf.image_api.region_name or "any"))
    source = "endpoint_override" if conf.image_api.endpoint_override else "the Keystone catalog"
    try:
        adapter.get("/v2/images", params={"limit": 1})
    except ks_exc.ClientException as exc:
        raise CheckFailed("%s (from %s) does not answer: %s" % (url, source,
                                                               cacher.one_line(exc))) from exc
    return "%s (from %s)" % (url, source)


def check_image_write(conf):
    """The service user must be allowed to write cache_raw_*: try it on a scratch image of its
    own (private, no data), deleted again in every outcome."""
    adapter = _adapter(conf)
    name = SCRATCH_IMAGE_PREFIX + uuid.uuid4().hex[:12]
    try:
        image = adapter.post("/v2/images", json={
            "name": name, "visibility": "private", "disk_format": "qcow2",
            "container_format": "bare"}).json()
    except ks_exc.ClientException as exc:
        raise CheckFailed("user %s cannot create a scratch image: %s" % (
            conf.image_api.username, _keystone_reason(conf, exc))) from exc
    try:
        adapter.patch("/v2/images/%s" % image["id"],
                      json=[{"op": "add", "path": "/" + cacher.STATUS, "value": cacher.ERROR},
                            {"op": "add", "path": "/" + cacher.ERROR_PROP,
                             "value": "written by cacheraw-manage check"}],
                      headers={"Content-Type": image_api.PATCH_TYPE})
    except ks_exc.ClientException as exc:
        raise CheckFailed("user %s may not write %s: %s" % (
            conf.image_api.username, cacher.STATUS, cacher.one_line(exc))) from exc
    finally:
        try:
            adapter.delete("/v2/images/%s" % image["id"])
        except ks_exc.ClientException:
            pass
    return "user %s may write %s (on a scratch image, deleted again)" % (
        conf.image_api.username, cacher.STATUS)


def check_bus(conf):
    # Imported here: it takes half a second, which no other command of cacheraw-manage needs.
    import oslo_messaging

    try:
        transport = oslo_messaging.get_notification_transport(conf)
    except (oslo_messaging.MessagingException, ValueError) as exc:
        raise CheckFailed("transport_url: %s" % cacher.one_line(exc)) from exc
    url = oslo_messaging.TransportURL.parse(conf, conf.transport_url)
    where = ", ".join("%s:%s" % (h.hostname, h.port) for h in url.hosts) or "default host"
    quiet = std_logging.getLogger("oslo.messaging")
    level = quiet.level
    quiet.setLevel(std_logging.CRITICAL)  # its retry notice would repeat our one line
    try:
        # oslo.messaging has no public connection check: open one of the driver's own
        # connections (with its TLS and heartbeat options), trying once.
        with transport._driver._get_connection(retry=1):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        raise CheckFailed("cannot connect to %s (virtual host %s): %s" % (
            where, url.virtual_host or "/", cacher.one_line(exc) or type(exc).__name__)) from exc
    finally:
        quiet.setLevel(level)
        transport.cleanup()
    return "connected to %s (virtual host %s)" % (where, url.virtual_host or "/")
