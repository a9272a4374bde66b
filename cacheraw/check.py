"""cacheraw-manage check: can this configuration work? Each check is its system's own (the
converter, the Ceph store, the image API, the message bus): it does the real thing once, as the
daemon would, and leaves nothing behind.
"""

from __future__ import annotations

from typing import List, Tuple

from oslo_config import cfg

from cacheraw import converter
from cacheraw import exception
from cacheraw import image_api_checks
from cacheraw import properties
from cacheraw.ceph.store import CephStore

# Glance sends image.create before it answers the request that made the image.
NOTIFICATION_TIMEOUT = 10
# The data of the scratch image that shows where Glance stores images.
SCRATCH_DATA = bytes(4096)
# The properties of etc/glance/schema-image.json.
SCHEMA_PROPERTIES = (properties.CACHE_RAW, properties.AUTO_RECOVERY,
                     properties.MIGRATION_TIMEOUT, properties.MIGRATION_MAX_DOWNTIME,
                     properties.STORE, properties.STATUS)
RESTART = "in glance-api.conf on every Glance API server, and restart them"


def run_all(conf: cfg.ConfigOpts) -> List[Tuple[str, bool, str]]:
    """[(name, passed, one line)] for each check, in order."""
    results = []
    for name, check in (("config", check_config), ("converter", check_converter),
                        ("ceph", check_ceph),
                        ("image API endpoint", check_endpoint),
                        ("image API write", check_image_write),
                        ("message bus", check_bus),
                        ("Glance notifications", check_notifications),
                        ("Glance direct_url", check_locations),
                        ("Glance protections", check_protections),
                        ("Glance image schema", check_schema)):
        try:
            results.append((name, True, check(conf)))
        except exception.CacherawError as exc:
            # Room for the fix that the checks of Glance's settings name.
            results.append((name, False, exception.one_line(exc, limit=500)))
    return results


def check_config(conf: cfg.ConfigOpts) -> str:
    return "parsed %s" % (", ".join(conf.config_file) or "no config file")


def check_converter(conf: cfg.ConfigOpts) -> str:
    return converter.Converter(conf).check()


def check_ceph(conf: cfg.ConfigOpts) -> str:
    with CephStore(conf) as store:
        store.check_rbd_caps()
        space, limit = store.pool_space()
        fsid = store.fsid()
    return ("client.%s may create, snapshot, protect, unprotect and remove images, lock "
            "objects and blocklist a client in pool %s (cluster %s; room for %d MiB of caches, "
            "limited by %s)" % (conf.ceph.user, conf.ceph.pool, fsid, space // (1024 * 1024),
                                limit))


def check_endpoint(conf: cfg.ConfigOpts) -> str:
    return image_api_checks.checks(conf).check_endpoint()


def check_image_write(conf: cfg.ConfigOpts) -> str:
    return image_api_checks.checks(conf).check_write()


def check_bus(conf: cfg.ConfigOpts) -> str:
    # Only this command needs the bus: cacheraw-manage's other commands start without
    # loading oslo.messaging.
    from cacheraw import messaging
    return messaging.check_connection(conf)


# -- the settings of Glance that cacheraw needs, each seen from outside

def check_notifications(conf: cfg.ConfigOpts) -> str:
    from cacheraw import messaging
    exchange = conf.notifications.exchange
    with messaging.NotificationWatch(conf) as watch:
        with image_api_checks.checks(conf).scratch_image() as image:
            event = watch.wait_for(image["id"], NOTIFICATION_TIMEOUT)
    if event is None:
        raise exception.ConfigError(
            "no notification on exchange %s within %d s of making scratch image %s: set "
            "[oslo_messaging_notifications] driver = messagingv2 and transport_url (this bus) "
            "%s" % (exchange, NOTIFICATION_TIMEOUT, image["id"], RESTART))
    return "the image service sent %s for a scratch image on exchange %s" % (event, exchange)


def check_locations(conf: cfg.ConfigOpts) -> str:
    with CephStore(conf) as store:
        fsid = store.fsid()
    with image_api_checks.checks(conf).scratch_image(SCRATCH_DATA) as image:
        url = image.get("direct_url")
    if not url:
        raise exception.ConfigError(
            "the image service shows no direct_url (scratch image %s, with data): every "
            "image would be downloaded instead of read in pool %s; set [DEFAULT] "
            "show_image_direct_url = True %s" % (image["id"], conf.ceph.pool, RESTART))
    if url != properties.rbd_url(fsid, conf.ceph.pool, image["id"]):
        return ("new images are stored at %s://..., not in pool %s of cluster %s: they are "
                "downloaded to be converted" % (url.split(":", 1)[0], conf.ceph.pool, fsid))
    return "new images are stored in pool %s and show their direct_url: read in place" % (
        conf.ceph.pool)


def check_protections(conf: cfg.ConfigOpts) -> str:
    api = image_api_checks.checks(conf)
    probe = properties.PROTECTION_PROBE
    with api.scratch_image() as image:
        refused = api.property_refused(image["id"], probe)
    if not refused:
        raise exception.ConfigError(
            "the image service let %s be set, which cacheraw's property protections refuse "
            "to everyone: they are not in force, and any member may write %s; set "
            "property_protection_file = <cacheraw's etc/glance/property-protections.conf> "
            "and property_protection_rule_format = roles %s" % (probe, properties.STATUS,
                                                                 RESTART))
    return "cacheraw's property protections are in force (%s refused)" % probe


def check_schema(conf: cfg.ConfigOpts) -> str:
    schema = image_api_checks.checks(conf).image_schema().get("properties") or {}
    missing = [name for name in SCHEMA_PROPERTIES if name not in schema]
    values = (schema.get(properties.STATUS) or {}).get("enum") or ()
    missing += ["%s value %s" % (properties.STATUS, value) for value in properties.STATUSES
                if properties.STATUS in schema and value not in values]
    if missing:
        raise exception.ConfigError(
            "the image schema lacks %s: copy cacheraw's etc/glance/schema-image.json next to "
            "glance-api.conf (e.g. /etc/glance/schema-image.json) on every Glance API server, "
            "and restart them" % ", ".join(missing))
    return "the image schema has the extension's properties and every %s" % properties.STATUS
