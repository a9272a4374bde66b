"""cacheraw inside Nova: a libvirt compute driver whose RBD root disks are clones of an image's
RAW cache.

Imported by nova-compute only, through the shim ``nova.virt.cacheraw`` (``compute_driver =
cacheraw.LibvirtDriver``); the cacheraw daemon never imports this package, and nothing here is
needed without Nova.
"""
