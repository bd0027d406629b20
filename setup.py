"""Compiles the counter write path (engine/partition_counters.pyx) with Cython.

Everything else is in pyproject.toml. Cython is needed only to build (pyproject's
build-system requires it); the built extension needs nothing at run time. issue 17 chose it
over numba by measurement: numba adds 0.26 s of import and a JIT compile to every process start
and ~210 MB to an install, and the tests start many server processes.
"""

from Cython.Build import cythonize
from setuptools import setup

setup(
    ext_modules=cythonize(
        ["engine/partition_counters.pyx"],
        compiler_directives={"language_level": 3},
    )
)
