"""cacheraw-nova: the one module that puts cacheraw's compute driver where Nova looks for
compute drivers (nova.virt), as out-of-tree drivers do. It adds nova/virt/cacheraw/ to Nova's
own package and nothing else (no nova/__init__.py, no nova/virt/__init__.py): pip records that
file as this distribution's, so that uninstalling it, or upgrading Nova, leaves the other side
as it was. Installed with tools/install.sh --nova-venv.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = HERE.parent / "cacheraw" / "__init__.py"

setup(
    name="cacheraw-nova",
    version=re.search(r'__version__ = "(.+)"', VERSION.read_text())[1],
    description="nova.virt.cacheraw: the shim through which Nova loads cacheraw's libvirt driver",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=["nova.virt.cacheraw"],
    install_requires=["cacheraw"],
)
