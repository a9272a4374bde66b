"""(h), the Nova side: root disks made by Nova's real RBD image backend, as nova-compute makes
them at spawn (``LibvirtDriver._create_and_inject_local_root``: the backend's ``cache()`` with a
fetch function that tries ``clone()`` first and downloads on ``ImageUnacceptable``).

Run by bench/roots.py in a Nova virtual environment (tools/nova-venv.sh), never imported by the
bench itself. The image API is a stand-in that returns the image's record and "downloads" the
qcow2 by copying the local file (a real download only adds to upstream's time); everything else
(qemu-img info and convert, ``rbd import``, the clone, the resize) is Nova's and Ceph's.

    python bench/nova_roots.py FACTS.json   prints one JSON line of samples
"""

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import nova.conf
    from nova import context as nova_context
    from nova import exception
    from nova.tests import fixtures as nova_fixtures
    from nova.virt.libvirt import imagebackend
    from nova.virt.libvirt import utils as libvirt_utils

from cacheraw.nova import driver as cacheraw_driver

CONF = nova.conf.CONF


class Instance:
    def __init__(self):
        self.uuid = str(uuid.uuid4())


def configure(facts, instances_path):
    CONF([], project="nova")
    for group, values in (("libvirt", {"images_type": "rbd", "images_rbd_pool": facts["pool"],
                                       "images_rbd_ceph_conf": facts["conf"],
                                       "rbd_user": facts["user"]}),
                          (None, {"instances_path": instances_path,
                                  "force_raw_images": True})):
        for name, value in values.items():
            CONF.set_override(name, value, group=group)
    nova_fixtures.PrivsepFixture().setUp()


def stand_in_image_api(record, qcow2):
    def get(context, image_id, **kwargs):
        return dict(record)

    def download(context, image_id, data=None, dest_path=None, **kwargs):
        shutil.copyfile(qcow2, dest_path)
    imagebackend.IMAGE_API.get = get
    imagebackend.IMAGE_API.download = download


def make_root(backend_class, image_id, size):
    """Seconds to make one instance's root disk, and its name (to remove)."""
    backend = backend_class(instance=Instance(), disk_name="disk")
    ctxt = nova_context.get_admin_context()

    def clone_fallback_to_fetch(context, target, image_id, trusted_certs=None):
        try:
            backend.clone(context, image_id)
        except exception.ImageUnacceptable:
            libvirt_utils.fetch_image(context, target, image_id, trusted_certs)
    filename = hashlib.sha1(image_id.encode()).hexdigest()
    began = time.monotonic()
    backend.cache(fetch_func=clone_fallback_to_fetch, context=ctxt, filename=filename,
                  image_id=image_id, size=size)
    took = time.monotonic() - began
    return took, backend


def main(path):
    # The drivers' decisions (clone or not, and why) on stderr, for the bench's log.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    with open(path) as f:
        facts = json.load(f)
    instances_path = tempfile.mkdtemp(prefix="cacheraw-bench-nova-")
    try:
        configure(facts, instances_path)
        from nova.virt import images
        images.IMAGE_API = imagebackend.IMAGE_API
        stand_in_image_api(facts["image"], facts["qcow2"])
        samples = measure(facts, instances_path)
    finally:
        shutil.rmtree(instances_path, ignore_errors=True)
    print(json.dumps(samples))


def measure(facts, instances_path):
    """For each run, each on a host without the image in ``_base`` (Nova's image cache, which
    Nova uses before it tries a clone): cacheraw's clone, then upstream's first boot of the image
    on a host (download, convert, import) and its next one (``_base`` warm: import only)."""
    image_id, size = facts["image"]["id"], facts["size"]
    base = os.path.join(instances_path, CONF.image_cache.subdirectory_name)
    samples = {"cacheraw": [], "upstream_first": [], "upstream_warm_base": []}
    for _ in range(facts["runs"]):
        for key, backend_class in (("cacheraw", cacheraw_driver.CacheRawRbd),
                                   ("upstream_first", imagebackend.Rbd),
                                   ("upstream_warm_base", imagebackend.Rbd)):
            if key != "upstream_warm_base":
                shutil.rmtree(base, ignore_errors=True)
            took, backend = make_root(backend_class, image_id, size)
            samples[key].append({"s": took, "parent": parent_of(backend)})
            backend.driver.remove_image(backend.rbd_name)
    return samples


def parent_of(backend):
    try:
        return list(backend.driver.parent_info(backend.rbd_name))
    except exception.ImageUnacceptable:
        return None


if __name__ == "__main__":
    main(sys.argv[1])
