"""cacheraw-manage check: can this configuration work? Each check is its system's own (the
converter, the Ceph store, the image API, the message bus): it does the real thing once, as the
daemon would, and leaves nothing behind.
"""

from cacheraw import converter as conv
from cacheraw import exception
from cacheraw import image_api
from cacheraw import store as ceph_store


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
        except exception.CacherawError as exc:
            results.append((name, False, exception.one_line(exc)))
    return results


def check_config(conf):
    return "parsed %s" % (", ".join(conf.config_file) or "no config file")


def check_converter(conf):
    return conv.Converter(conf).check()


def check_ceph(conf):
    store = ceph_store.CephStore(conf)
    try:
        store.connect()
        store.check_rbd_caps()
        space, _ = store.pool_space()
        fsid = store.fsid()
    finally:
        store.close()
    return ("client.%s may create, snapshot, protect, unprotect and remove images and lock "
            "objects in pool %s (cluster %s, %d MiB free)"
            % (conf.ceph.user, conf.ceph.pool, fsid, space // (1024 * 1024)))


def check_endpoint(conf):
    return image_api.ImageAPI(conf).check_endpoint()


def check_image_write(conf):
    return image_api.ImageAPI(conf).check_write()


def check_bus(conf):
    # Only this command needs the bus: cacheraw-manage's other commands start without
    # loading oslo.messaging.
    from cacheraw import messaging
    return messaging.check_connection(conf)
