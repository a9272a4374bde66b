from oslo_config import cfg

from cacheraw.conf import opts


def test_every_group_is_listed_for_the_sample_generator():
    groups = {group.name for group, _ in opts.list_opts()}
    assert groups == {"ceph", "converter", "image_api", "metrics", "notifications",
                      "worker"}


def test_defaults_match_the_deployment_conventions():
    from cacheraw.conf import register_opts
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([])
    assert conf.notifications.exchange == "glance"
    assert conf.notifications.topic == "notifications"
    assert conf.notifications.pool == "cacheraw"
    assert conf.ceph.pool == "images"
    assert conf.ceph.user == "cacheraw"
    assert conf.converter.allowed_source_formats == ["qcow2"]
    assert conf.worker.max_concurrent_conversions == 2
    assert conf.image_api.valid_interfaces == ["internal"]
    assert conf.image_api.service_type == "image"
