"""Build glue: the cffi extension is declared here, metadata in pyproject.toml."""
from __future__ import annotations

from typing import List, Tuple

from setuptools import setup
from setuptools.command.build_py import build_py

BUILDER = ("loopcore", "_build")  # (package, module) of the cffi builder


class BuildPyWithoutBuilder(build_py):
    """build_py that leaves the cffi builder out of wheels: it is needed to
    compile the extension (so the sdist carries it, see MANIFEST.in), never
    at run time, and imports cffi's build machinery."""

    def find_package_modules(self, package: str, package_dir: str) -> List[Tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) != BUILDER]


setup(
    cffi_modules=["src/loopcore/_build.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithoutBuilder},
    # One abi3 wheel per architecture: cffi builds against the limited API.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
