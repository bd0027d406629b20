"""The write path runs compiled: setup.py builds these modules with Cython at install.

``engine/events.py`` also runs as plain Python (a build without it still works, 3.6x slower
to validate), so without this test a build that quietly stopped compiling it would pass CI.
"""

from __future__ import annotations

import doctest
import importlib.machinery

import pytest

import engine.events
import engine.record_encoding


@pytest.mark.parametrize("name", ["engine.partition_counters", "engine.events", "engine.record_encoding"])
def test_module_is_the_compiled_extension(name: str) -> None:
    module = __import__(name, fromlist=["_"])
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"{name} runs from {module.__file__}: rebuild with `python setup.py build_ext --inplace`")


def test_doctests_of_compiled_events_module_pass() -> None:
    # pytest's --doctest-modules skips engine/events.py (its module is the extension, not the
    # file); Cython keeps the docstrings' examples in ``__test__``.
    result = doctest.testmod(engine.events)
    assert result.attempted >= 5 and result.failed == 0


def test_doctests_of_record_encoding_pass() -> None:
    # pytest does not collect a .pyx's doctests; Cython keeps them in ``__test__``.
    result = doctest.testmod(engine.record_encoding)
    assert result.attempted >= 2 and result.failed == 0
