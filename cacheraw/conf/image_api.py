from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = cfg.OptGroup("image_api", title="The image API (Glance) and how to authenticate to it",
                     help="keystoneauth1's session, adapter and auth options. The user needs a "
                          "role that may write the cache_raw_* properties (admin by default). "
                          "The endpoint comes from the Keystone catalog (service type 'image', "
                          "first of valid_interfaces) unless endpoint_override names it.")

DEFAULT_TIMEOUT = 60


def register_opts(conf):
    conf.register_group(GROUP)
    ks_loading.register_session_conf_options(conf, GROUP.name)
    ks_loading.register_adapter_conf_options(conf, GROUP.name, include_deprecated=False)
    ks_loading.register_auth_conf_options(conf, GROUP.name)
    conf.set_default("service_type", "image", group=GROUP.name)
    conf.set_default("valid_interfaces", ["internal"], group=GROUP.name)
    conf.set_default("timeout", DEFAULT_TIMEOUT, group=GROUP.name)


def list_opts():
    return [(GROUP, ks_loading.get_session_conf_options()
             + ks_loading.get_adapter_conf_options(include_deprecated=False)
             + ks_loading.get_auth_common_conf_options()
             + ks_loading.get_auth_plugin_conf_options("password"))]
