"""qemu-img and what it reads and writes through: the only package that runs a process.

runner: a qemu-img run in its sandbox, under its limits, every output read as a bounded stream;
inspection: the image's first bytes, ``qemu-img info``, ``check`` and ``map``; convert: the
conversion itself; nbd and nbd_requests: the NBD server through which qemu-img reads the source
and writes the cache (the worker's librbd handles stay in the worker).
"""
