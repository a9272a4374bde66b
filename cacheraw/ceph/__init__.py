"""The Ceph cluster: the images' RBD data, the RAW caches and the conversion locks.

Only this package (and cacheraw.store, the snapshots served to qemu-img) imports rados and rbd.
Every handle is a ``with``; every library error is translated into cacheraw.exception at this
boundary. Snapshot work is idempotent: creating what exists or removing what is gone is
"already done".
"""
