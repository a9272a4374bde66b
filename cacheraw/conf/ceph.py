from oslo_config import cfg

GROUP = cfg.OptGroup("ceph", title="The Ceph cluster that holds the images and their caches")

OPTS = [
    cfg.StrOpt("conf", default="/etc/ceph/ceph.conf", help="Path of ceph.conf."),
    cfg.StrOpt("user", default="cacheraw",
               help="Ceph user, without the 'client.' prefix. It needs only "
                    "\"mon 'profile rbd' osd 'profile rbd pool=<pool>'\"; never use admin."),
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
                    "third of this while it converts; the lock of a crashed worker is free again "
                    "after at most this long."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
