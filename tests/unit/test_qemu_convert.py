"""cacheraw.qemu.convert: the ``qemu-img convert`` command of a conversion, and its progress
read from ``-p`` output however it is split."""

import io

from cacheraw.qemu import convert
from cacheraw.qemu.job import Job


class Served:
    def __init__(self, path):
        self.path = path

    def qemu_file(self):
        return {"driver": "nbd", "server.type": "unix", "server.path": self.path}

    def binds(self):
        return [(self.path, self.path, True)]


class Conf:
    coroutines = 8
    qemu_img_convert_cpu_seconds = 600
    qemu_img_convert_timeout = 3600


class QemuImg:
    def __init__(self):
        self.runs = []

    def run(self, args, cpu_seconds, timeout, **kwargs):
        self.runs.append((args, cpu_seconds, timeout, kwargs))


def test_convert_writes_the_served_cache_from_the_served_source_with_the_format_forced():
    qemu_img = QemuImg()
    job = Job("0dc0185d-550c-461a-bdc5-25b9e20586d5")
    convert.convert(qemu_img, Conf(), Served("/run/c/source"), "qcow2", Served("/run/c/cache"),
                    job)
    ((args, cpu, timeout, kwargs),) = qemu_img.runs
    assert args[:4] == ["convert", "-n", "--target-is-zero", "-W"] and "-p" not in args
    assert args[args.index("-m") + 1] == "8"
    source = args[args.index("--image-opts") + 1]
    target = args[args.index("--target-image-opts") + 1]
    assert source.startswith("driver=qcow2,") and "/run/c/source" in source
    assert target.startswith("driver=raw,") and "/run/c/cache" in target
    assert (cpu, timeout) == (600, 3600) and kwargs["job"] is job
    assert kwargs["binds"] == [("/run/c/source", "/run/c/source", True),
                               ("/run/c/cache", "/run/c/cache", True)]


def test_progress_is_asked_of_qemu_img_only_when_someone_follows_it():
    qemu_img = QemuImg()
    job = Job(None)
    job.on_progress = print
    convert.convert(qemu_img, Conf(), Served("/s"), "raw", Served("/c"), job)
    assert "-p" in qemu_img.runs[0][0]


def test_qemu_img_progress_is_parsed():
    assert convert.parse_progress("    (0.00/100%)\r    (8.33/100%)\r    (100.00/100%)\r") \
        == [0.0, 8.33, 100.0]
    assert convert.parse_progress("garbage (x/100%)") == []


def stream(data):
    return io.BufferedReader(io.BytesIO(data), buffer_size=5)


def test_a_report_split_across_reads_is_seen_once_whole():
    seen = []
    convert.follow_progress(stream(b"    (12.50/100%)\r    (100.00/100%)\r\n"), seen.append)
    assert seen == [12.5, 100.0]


def test_a_failing_progress_reader_never_stops_the_reading():
    seen = []

    def reader(percent):
        seen.append(percent)
        raise ValueError("broken reader")

    convert.follow_progress(stream(b"(1/100%)\r(2/100%)\r"), reader)
    assert seen == [1.0, 2.0]


def test_without_a_reader_the_output_is_read_and_dropped():
    data = stream(b"(1/100%)\r" * 1000)
    convert.follow_progress(data, None)
    assert data.read() == b""
