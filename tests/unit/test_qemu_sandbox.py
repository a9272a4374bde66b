"""cacheraw.qemu.sandbox: the bubblewrap command line of qemu-img's sandbox, and what a program
run by it sees (the real bwrap)."""

import subprocess

from cacheraw.qemu import sandbox


def test_the_sandbox_has_its_namespaces_no_capabilities_and_a_cleared_environment():
    argv = sandbox.argv("qemu-img", ["info", "x"])
    assert argv[0] == "bwrap"
    assert argv[-4:] == ["--", "qemu-img", "info", "x"]
    for flag in ("--unshare-user", "--unshare-net", "--unshare-pid", "--die-with-parent",
                 "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    setenv = [tuple(argv[i + 1:i + 3]) for i, arg in enumerate(argv) if arg == "--setenv"]
    assert sorted(setenv) == sorted(sandbox.ENVIRONMENT)


def test_only_usr_the_program_and_the_binds_are_mounted():
    argv = sandbox.argv("/opt/qemu/qemu-img", ["convert"],
                        [("/run/c/1", "/run/c/1", True), ("/tmp/x.download", "/img", False),
                         ("/run/c/1", "/run/c/1", True)])
    mounts = [tuple(argv[i:i + 3]) for i, arg in enumerate(argv)
              if arg in ("--bind", "--ro-bind")]
    assert mounts == [("--ro-bind", "/usr", "/usr"),
                      ("--ro-bind", "/opt/qemu/qemu-img", "/opt/qemu/qemu-img"),
                      ("--bind", "/run/c/1", "/run/c/1"),  # once, however often given
                      ("--ro-bind", "/tmp/x.download", "/img")]
    assert "/etc" not in argv and "/proc" not in argv


def test_a_program_under_usr_is_not_bound_again():
    argv = sandbox.argv("/usr/bin/qemu-img", ["info"])
    assert argv.count("--ro-bind") == 1


def test_a_sandboxed_program_sees_no_etc_no_proc_and_no_environment(tmp_path):
    (tmp_path / "visible").write_text("x")
    out = subprocess.run(
        sandbox.argv("/bin/sh", ["-c", "ls /; env | sort; ls /mnt; ls /etc 2>&1 | head -1"],
                     [(str(tmp_path), "/mnt", False)]),
        capture_output=True, timeout=30, check=True,
        env={"SECRET": "s3cret", "PATH": "/usr/bin:/bin"}).stdout.decode()
    assert "SECRET" not in out and "s3cret" not in out
    assert "visible" in out
    listed = out.split("LC_ALL=")[0].split()
    assert "etc" not in listed and "proc" not in listed and "home" not in listed
