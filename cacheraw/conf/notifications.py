from oslo_config import cfg

GROUP = cfg.OptGroup("notifications", title="The image service's notifications")

OPTS = [
    cfg.StrOpt("exchange", default="glance",
               help="Exchange on which the image service publishes its notifications."),
    cfg.StrOpt("topic", default="notifications",
               help="Topic of the image service's notifications."),
    cfg.StrOpt("pool", default="cacheraw",
               help="Notification pool name. Workers on several controllers that share this "
                    "name share the notifications: each is handled by one of them. The queue "
                    "outlives the workers and collects notifications while none runs."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
