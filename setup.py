import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
DOCS = sorted(str(path.relative_to(HERE)) for path in HERE.glob("docs/*.md"))


def requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="cacheraw",
    version=re.search(r'__version__ = "(.+)"', (HERE / "cacheraw/__init__.py").read_text())[1],
    description="Caches RAW copies of qcow2 Glance images in Ceph for copy-on-write clones",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # Tested on each (`make test`): Debian's Ceph bindings are for 3.11; RHEL 9 has 3.9, Ubuntu
    # 22.04 3.10, Ubuntu 24.04 3.12.
    python_requires=">=3.9",
    classifiers=[
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
    packages=find_packages(include=["cacheraw", "cacheraw.*"]),
    install_requires=requirements(),
    # The Cinder volume driver (cacheraw.cinder.driver) runs inside cinder-volume, which brings
    # Cinder (2023.1, 22, and later: tools/cinder-releases.txt); the daemon never imports it.
    # tools/install.sh installs the wheel there without dependencies.
    extras_require={"cinder": ["cinder>=22.0.0"]},
    # tools/install.sh takes these from the virtual environment it installed the wheel into.
    data_files=[
        ("share/cacheraw", ["systemd/cacheraw-worker.service", "systemd/cacheraw.sysusers.conf",
                            "etc/cacheraw/cacheraw.conf.sample"]),
        ("share/doc/cacheraw", ["README.md", "CHANGELOG.md", "LICENSE"]),
        ("share/doc/cacheraw/docs", DOCS),
    ],
    entry_points={
        "console_scripts": [
            "cacheraw-worker = cacheraw.cmd.worker:main",
            "cacheraw-manage = cacheraw.cmd.manage:main",
        ],
        "oslo.config.opts": [
            "cacheraw = cacheraw.conf.opts:list_opts",
        ],
    },
)
