"""The Ceph cluster: the images' RBD data, the RAW caches and the conversion locks.

Only this package imports rados and rbd, and its client is the only one that reads the images
and writes the caches (qemu-img gets them served over NBD by cacheraw.ceph.served).
Every handle is a ``with``; every library error is translated into cacheraw.exception at this
boundary. Snapshot work is idempotent: creating what exists or removing what is gone is
"already done".
"""
