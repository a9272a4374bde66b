"""cacheraw-manage check: every check runs, in order, each ending in one line."""

from cacheraw import check
from cacheraw import exception

NAMES = ["config", "converter", "ceph", "image API endpoint", "image API write", "message bus"]


def test_every_check_runs_in_order_and_a_failure_is_one_line(conf, monkeypatch):
    ran = []

    def passes(name):
        return lambda conf: ran.append(name) or "%s fine" % name

    def fails(conf):
        ran.append("ceph")
        raise exception.CephUnavailable("cannot connect:\n  timed out after 15 s")

    for name, function in (("converter", "check_converter"), ("image API endpoint",
                                                              "check_endpoint"),
                           ("image API write", "check_image_write"),
                           ("message bus", "check_bus")):
        monkeypatch.setattr(check, function, passes(name))
    monkeypatch.setattr(check, "check_ceph", fails)
    results = check.run_all(conf)
    assert [name for name, _, _ in results] == NAMES
    assert ran == NAMES[1:]
    assert results[2] == ("ceph", False, "cannot connect: timed out after 15 s")
    assert all(passed for name, passed, _ in results if name != "ceph")


def test_the_config_check_names_the_files_it_parsed(conf, tmp_path):
    assert check.check_config(conf) == "parsed no config file"
    path = tmp_path / "cacheraw.conf"
    path.write_text("[worker]\n")
    conf(["--config-file", str(path)])
    assert check.check_config(conf) == "parsed %s" % path
