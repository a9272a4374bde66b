from oslo_config import cfg

GROUP = cfg.OptGroup("converter", title="Conversion of images to RAW with qemu-img")

OPTS = [
    cfg.ListOpt("allowed_source_formats", default=["qcow2"],
                help="Disk formats that are converted to RAW. An image of another format that asks "
                     "for a cache gets an Error naming this option; a raw image needs no cache "
                     "(NotNeeded)."),
    cfg.StrOpt("conversion_dir", default="/var/lib/cacheraw/conversions",
               help="Directory where an image whose data is not in this Ceph pool is "
                    "downloaded, converted and removed; it also holds the folder of the Unix "
                    "sockets on which the worker serves the image and its new cache to "
                    "qemu-img (which gets nothing else of the host)."),
    cfg.StrOpt("qemu_img", default="qemu-img",
               help="The qemu-img program, run in a bubblewrap (bwrap) sandbox."),
    cfg.IntOpt("qemu_img_address_space_mib", default=2048, min=256,
               help="Address space limit of each qemu-img process, in MiB."),
    cfg.IntOpt("qemu_img_info_cpu_seconds", default=30, min=1,
               help="CPU time limit of 'qemu-img info', in seconds."),
    cfg.IntOpt("qemu_img_convert_cpu_seconds", default=3600, min=1,
               help="CPU time limit of 'qemu-img convert', in seconds."),
    cfg.IntOpt("qemu_img_info_timeout", default=300, min=1,
                help="Wall-clock seconds 'qemu-img info' and 'qemu-img map' may take."),
    cfg.IntOpt("qemu_img_convert_timeout", default=6 * 3600, min=1,
                help="Wall-clock seconds one 'qemu-img convert' may take; then it is killed and "
                     "the image retried later."),
    cfg.IntOpt("coroutines", default=8, min=1, max=16,
               help="Parallel requests of qemu-img convert (-m); writes are out of order (-W)."),
    cfg.IntOpt("max_map_extents", default=1000000, min=1,
               help="Most extents of 'qemu-img map' read to count an image's data (the output "
                    "is read one extent at a time, never whole). An image with more is counted "
                    "as its whole virtual size in the space check."),
    cfg.FloatOpt("max_pool_usage", min=0.05, max=1.0,
                 help="Highest fraction of the cluster's raw capacity that the pool's fullest "
                      "OSD may reach once a cache and every running conversion are written. "
                      "Default: the cluster's nearfull ratio (used as well when this is "
                      "higher). A cache that would not fit is refused with an error, and "
                      "retried by the sweep once there is room."),
    cfg.FloatOpt("max_expansion", default=0, min=0,
                 help="Largest ratio between an image's data once converted and the size of "
                      "its upload (a compressed qcow2 can describe far more data than it "
                      "holds). An image that expands more gets an error. 0: no limit."),
    cfg.StrOpt("share_identical", default="clone", choices=[
        ("clone", "the new cache is a copy-on-write clone of the other's: instant, no space"),
        ("copy", "the new cache is a flattened clone: a full copy made inside Ceph"),
        ("off", "every image is converted with qemu-img")],
               help="What to do when an image asks for a cache and another image whose data the "
                    "image service hashed equal (same secure os_hash_algo and os_hash_value, "
                    "same size and disk_format, both active) is already cached in this pool. "
                    "Set 'off' where users can set an image's hash themselves (Glance's "
                    "show_multiple_locations, or do_secure_hash = false): docs/security.md, "
                    "'Identical images, and who may read what'."),
    cfg.IntOpt("max_virtual_size_gib", default=1024, min=1,
               help="Largest virtual disk size accepted, in GiB. Larger images get an error."),
]


def register_opts(conf):
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
