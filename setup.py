"""Packages of the wheel: bovw and its subpackages, plus the demo dataset.

The demo dataset stays at the top of the checkout (``data/``), where ``python
cli.py`` and editable installs find it, and ships inside the wheel as the
package data of ``bovw._demo``, where :data:`bovw.config.DEMO_DATA` finds it
after ``pip install .``. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bovw", "bovw.*"]), "bovw._demo"],
    package_dir={"bovw._demo": "data"},
    package_data={"bovw._demo": ["README.md", "train/*/*.jpg", "test/*/*.jpg"]},
)
