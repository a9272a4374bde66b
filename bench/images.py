"""Test images of a realistic shape: a qcow2 whose incompressible data is spread over the disk in
extents of many sizes, with allocated clusters that hold only zeros, and the rest unallocated.

The layout is drawn from a seeded random generator, so that every run converts the same image.
"""

import math
import os
import random
import subprocess
from dataclasses import dataclass

CLUSTER = 64 * 1024  # qcow2's default cluster size: every extent starts and ends on one
MIB = 1024 * 1024
GIB = 1024 * MIB
# Extent sizes are drawn log-uniformly between these: a file system holds many small files
# and a few large ones, laid out mostly contiguously by an image builder.
SMALLEST_EXTENT = 256 * 1024
LARGEST_EXTENT = 64 * MIB


@dataclass
class Shape:
    """What a test image holds: virtual size, random data, allocated zeros (all in bytes)."""
    name: str
    virtual: int
    data: int
    zeros: int

    def describe(self):
        return "%s: %s virtual, %s of random data, %s of allocated zeros" % (
            self.name, human(self.virtual), human(self.data), human(self.zeros))


def human(n):
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if n >= size:
            return ("%.1f %s" % (n / size, unit)).replace(".0 ", " ")
    return "%d B" % n


def _extent_sizes(total, rng):
    """Cluster-aligned sizes that add up to ``total``."""
    sizes, left = [], total
    low, high = math.log(SMALLEST_EXTENT), math.log(LARGEST_EXTENT)
    while left > 0:
        size = int(math.exp(rng.uniform(low, high))) // CLUSTER * CLUSTER
        size = max(CLUSTER, min(size, left))
        sizes.append(size)
        left -= size
    return sizes


def layout(shape, seed):
    """[(offset, length, kind)] with kind "data" or "zero", sorted, not overlapping, with
    unallocated gaps of random sizes between them."""
    rng = random.Random(seed)
    extents = ([(s, "data") for s in _extent_sizes(shape.data, rng)]
               + [(s, "zero") for s in _extent_sizes(shape.zeros, rng)])
    rng.shuffle(extents)
    free = shape.virtual - shape.data - shape.zeros
    if free < 0:
        raise ValueError("%s: data and zeros exceed the virtual size" % shape.name)
    # Gaps: random cut points of the free space, one gap before each extent.
    cuts = sorted(rng.randrange(0, free // CLUSTER + 1) * CLUSTER for _ in extents)
    gaps = [b - a for a, b in zip([0] + cuts, cuts)]
    result, offset = [], 0
    for (length, kind), gap in zip(extents, gaps):
        offset += gap
        result.append((offset, length, kind))
        offset += length
    return result


def build(shape, path, workdir, seed=1):
    """Write the qcow2 ``path`` of ``shape``. Returns its layout."""
    extents = layout(shape, seed)
    raw = os.path.join(workdir, os.path.basename(path) + ".raw")
    try:
        with open(raw, "wb") as f:
            f.truncate(shape.virtual)
            for offset, length, kind in extents:
                if kind == "data":
                    f.seek(offset)
                    _write_random(f, length)
        # Zeros in the raw file are holes: the qcow2 gets only the data...
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path],
                       check=True, timeout=600)
    finally:
        if os.path.exists(raw):
            os.unlink(raw)
    # ...then clusters allocated with zero bytes written in them, as a guest that zeroed
    # blocks leaves them (qemu-io writes the bytes: no zero flag, no detection).
    commands = []
    for offset, length, kind in extents:
        if kind == "zero":
            commands += ["-c", "write -q -P 0 %d %d" % (offset, length)]
    for start in range(0, len(commands), 400):
        subprocess.run(["qemu-io", "-f", "qcow2", *commands[start:start + 400], path],
                       check=True, timeout=600, capture_output=True)
    return extents


def _write_random(f, length):
    while length > 0:
        chunk = min(length, 8 * MIB)
        f.write(os.urandom(chunk))
        length -= chunk
