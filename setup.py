"""Thin setup.py; configuration lives in pyproject.toml.

The only code here copies the RoIAlign op sources (``custom_ops/roi_align``)
into the built package as ``mrcnn/ops/_src/`` so that a non-editable install
(``pip install .``) can still compile the op on first use
(see ``mrcnn/ops/build.py``).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

OP_SOURCES = Path(__file__).resolve().parent / "custom_ops" / "roi_align"


class BuildPyWithOpSources(build_py):
    """build_py that also ships the custom-op C++/CUDA sources as package data."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "mrcnn" / "ops" / "_src"
        target.mkdir(parents=True, exist_ok=True)
        for pattern in ("*.cc", "*.h"):
            for source in OP_SOURCES.glob(pattern):
                shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithOpSources})
