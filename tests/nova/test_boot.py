"""Servers booted by real Nova code (API, conductor, scheduler and nova-compute in one process,
Nova's own functional fixtures with a fake libvirt) whose root disks its real RBD image backend
makes in the stack's Ceph, with cacheraw's driver loaded as ``compute_driver =
cacheraw.LibvirtDriver``.

tests/functional/test_nova.py runs this module in a Nova virtual environment and hands it, in
the JSON file named by CACHERAW_NOVA_FACTS, the stack's Ceph, the image records as the stack's
Glance serves them (cacheraw's properties included) with the schema to read them, the qcow2 they
were uploaded from, and what each should give. Nova's Glance fixture holds those records (Nova's
own translation of Glance's JSON) and serves that qcow2 when Nova downloads. The disks are left
in the pool for the caller (the image's delete), and described in CACHERAW_NOVA_RESULTS.
"""

import io
import json
import os
import warnings
from unittest import mock

import fixtures
import rados
import rbd

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from nova import context as nova_context
    from nova.image import glance
    from nova.tests import fixtures as nova_fixtures
    from nova.tests.functional import integrated_helpers
    from nova.tests.functional.libvirt import base
    from nova.virt import images

FACTS = os.environ.get("CACHERAW_NOVA_FACTS")
RESULTS = os.environ.get("CACHERAW_NOVA_RESULTS")


class GlanceImage(dict):
    """An image as glanceclient gives it to Nova: Glance's JSON and the image schema."""

    def __init__(self, record, schema):
        super().__init__(record)
        self.schema = schema


def nova_record(record, schema):
    """The image as Nova's Glance API gives it to the compute driver, with its locations as
    ``show(include_locations=True)`` makes them of ``direct_url``."""
    image = glance._translate_from_glance(GlanceImage(record, schema), include_locations=True)
    locations = image.get("locations") or []
    if image.get("direct_url"):
        locations.append({"url": image["direct_url"], "metadata": {}})
    image["locations"] = locations
    return image


class RootDisksFromTheCache(base.ServersTestBase):
    """Boots one server per image of the facts and reads how its root disk was made."""

    microversion = "2.37"

    def setUp(self):
        if not FACTS:
            raise AssertionError("CACHERAW_NOVA_FACTS is not set: run these through "
                                 "tests/functional/test_nova.py")
        with open(FACTS) as f:
            self.facts = json.load(f)
        # ServersTestBase.setUp without its fake image backend and its mocked _create_image:
        # the root disks are made by Nova's real Rbd backend in the stack's Ceph.
        self.flags(instances_path=self.useFixture(fixtures.TempDir()).path)
        self.computes, self.compute_rp_uuids = {}, {}
        integrated_helpers._IntegratedTestBase.setUp(self)
        self.useFixture(nova_fixtures.CGroupsFixture())
        self.libvirt = self.useFixture(nova_fixtures.LibvirtFixture())
        self.useFixture(nova_fixtures.OSBrickFixture())
        self._mock_host()
        ceph = self.facts["ceph"]
        # The disk's libvirt XML names the cephx secret of Nova's user (any uuid: fake libvirt).
        self.flags(group="libvirt", images_type="rbd", images_rbd_pool=ceph["pool"],
                   images_rbd_ceph_conf=ceph["conf"], rbd_user=ceph["user"],
                   rbd_secret_uuid="9bd0f6d3-4dbb-4b36-8f2a-0c5a0e1a8c7e")
        self.flags(force_raw_images=True)
        self.fetch = self.useFixture(fixtures.MockPatch(
            "nova.virt.images.fetch", side_effect=images.fetch)).mock
        self._add_images()

    def _mock_host(self):
        """The host facts ServersTestBase fakes (fake libvirt has no host of its own)."""
        for name, value in (
                ("nova.virt.libvirt.LibvirtDriver._get_local_gb_info",
                 {"total": 128, "used": 44, "free": 84}),
                ("nova.virt.libvirt.driver.libvirt_utils.is_valid_hostname", True),
                ("nova.privsep.utils.supports_direct_io", True),
                ("nova.virt.libvirt.host.Host.get_online_cpus", set(range(16)))):
            self.useFixture(fixtures.MockPatch(name, return_value=value))
        self.useFixture(fixtures.MockPatch(
            "nova.virt.libvirt.driver.libvirt_utils.file_open",
            side_effect=lambda *a, **k: io.BytesIO(b"")))
        patcher = mock.patch("nova.virt.libvirt.host.Host.get_connection")
        self.mock_conn = patcher.start()
        self.addCleanup(patcher.stop)

    def _clear_attrs(self):
        """Nova's TestCase drops every attribute after a test, the one through which pytest
        runs a unittest method too; this one case frees nothing worth it."""

    def _setup_compute_service(self):
        self.flags(compute_driver="cacheraw.LibvirtDriver")

    def _add_images(self):
        ctxt = nova_context.get_admin_context()
        for case in self.facts["cases"]:
            with open(self.facts["qcow2"], "rb") as data:
                self.glance.create(ctxt, nova_record(case["image"], self.facts["schema"]),
                                   data=data)

    def test_each_image_s_root_disk_is_made_as_expected(self):
        self.start_compute()
        results, wrong = {}, []
        for case in self.facts["cases"]:
            image_id = case["image"]["id"]
            self.fetch.reset_mock()
            server = self._create_server(image_uuid=image_id, networks="none")
            disk = "%s_disk" % server["id"]
            got = {"disk": disk, "parent": self._parent(disk),
                   "downloads": self.fetch.call_count, "status": server["status"]}
            results[case["name"]] = got
            want = {"disk": disk, "parent": case["parent"],
                    "downloads": 0 if case["parent"] else 1, "status": "ACTIVE"}
            if got != want:
                wrong.append("%s: got %s, want %s" % (case["name"], got, want))
        if RESULTS:
            with open(RESULTS, "w") as f:
                json.dump(results, f)
        self.assertEqual([], wrong)

    def _parent(self, disk):
        """[pool, image, snapshot] of the disk's parent, None when it has none."""
        ceph = self.facts["ceph"]
        with rados.Rados(conffile=ceph["conf"], rados_id=ceph["user"]) as cluster, \
                cluster.open_ioctx(ceph["pool"]) as ioctx, \
                rbd.Image(ioctx, disk, read_only=True) as image:
            try:
                return list(image.parent_info())
            except rbd.ImageNotFound:
                return None
