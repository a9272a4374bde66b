from oslo_config import cfg

GROUP = cfg.OptGroup("ceph", title="The Ceph cluster that holds the images and their caches")

OPTS = [
    cfg.StrOpt("conf", default="/etc/ceph/ceph.conf", help="Path of ceph.conf."),
    cfg.StrOpt("user", default="cacheraw",
               help="Ceph user, without the 'client.' prefix. It needs only "
                    "\"mon 'profile rbd' osd 'profile rbd pool=<pool>'\" ('profile rbd' lets it "
                    "blocklist a worker whose lease ran out); never use admin."),
    cfg.StrOpt("keyring",
               help="Path of the user's keyring. Default: the one ceph.conf names."),
    cfg.StrOpt("pool", default="images",
               help="Pool of the image service's images, where the caches are written too."),
    cfg.IntOpt("connect_timeout", default=15, min=1,
               help="Seconds to wait when connecting to the cluster."),
    cfg.IntOpt("op_timeout", default=60, min=1,
               help="Seconds after which a Ceph monitor or OSD operation fails instead of "
                    "waiting for an unreachable cluster (rados_osd_op_timeout and "
                    "rados_mon_op_timeout)."),
    cfg.IntOpt("lock_duration", default=60, min=10,
               help="Seconds a conversion lock lasts unless renewed. A worker renews it every "
                    "sixth of this while it converts; the lock of a crashed worker is free again "
                    "after at most this long. See lock_renewal_timeout."),
    cfg.FloatOpt("lock_renewal_timeout", min=0.1,
                 help="Seconds one renewal of a conversion lock may take before it counts as "
                      "failed (default: lock_duration / 12, 5 s for the default lock_duration). "
                      "Two renewals in a row may fail without losing the lock: the worker "
                      "refuses to start unless lock_duration / 2 + 2 * lock_renewal_timeout is "
                      "less than five sixths of lock_duration (less than 10 s for the default "
                      "lock_duration)."),
    cfg.IntOpt("blocklist_expiry", default=3600, min=60,
               help="Seconds for which a worker that lost a conversion lock (it stalled past "
                    "its lease) is blocklisted by the worker that takes the lock over (osd "
                    "blocklist add). The blocklisted worker exits and its service manager "
                    "starts it again with a new Ceph client; the entry only has to outlast "
                    "the old client, which never reconnects."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
