"""Build glue: the cffi extension is declared here, metadata in pyproject.toml."""
from setuptools import setup

setup(
    cffi_modules=["src/loopcore/_build.py:ffibuilder"],
    # One abi3 wheel per architecture: cffi builds against the limited API.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
