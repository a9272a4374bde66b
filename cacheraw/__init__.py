"""cacheraw: keeps a RAW copy of qcow2 Glance images in Ceph, ready for copy-on-write clones."""

__version__ = "0.1.0"
