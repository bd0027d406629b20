"""Compiles the write path with Cython: the packed counters (engine/partition_counters.pyx) and
batch validation (engine/events.py, plain Python compiled as it is).

Everything else is in pyproject.toml. Cython is needed only to build (pyproject's
build-system requires it); the built extension needs nothing at run time. issue 17 chose it
over numba by measurement: numba adds 0.26 s of import and a JIT compile to every process start
and ~210 MB to an install, and the tests start many server processes.
"""

from Cython.Build import cythonize
from setuptools import setup

setup(
    ext_modules=cythonize(
        [
            # The users' counters, packed per partition: written for Cython.
            "engine/partition_counters.pyx",
            # Log records of counter batches: msgpack's bytes, written directly: 218 -> 107 ns per
            # event (bench/bench_ingest.py --validators, best of 9).
            "engine/record_encoding.pyx",
            # Plain Python compiled as it is (the .py stays the source and is what runs where
            # the extension is not built): batch validation, 510-550 -> 160 ns per event
            # (bench/bench_ingest.py --validators: best of 9, compiled against the same file
            # loaded as plain Python).
            "engine/events.py",
        ],
        compiler_directives={"language_level": 3, "annotation_typing": False},
    )
)
