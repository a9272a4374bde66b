"""Nova loads its compute driver as ``nova.virt.<compute_driver>``: with ``compute_driver =
cacheraw.LibvirtDriver`` that is this module, which only names cacheraw's driver."""

from cacheraw.nova.driver import CacheRawLibvirtDriver

LibvirtDriver = CacheRawLibvirtDriver

__all__ = ["LibvirtDriver"]
