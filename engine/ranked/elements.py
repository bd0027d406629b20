"""Values in and out of a ranked list, and the validation of what callers pass in.

Theory of operation
===================

Every element has ``id`` (u64), ``score`` (u64), ``tie_breaker`` (u32), ``updated_at`` (u32 unix
seconds, set from the caller's ``now`` on every write) and an optional JSON ``payload``
(``shared/compat/rankdb.md``). Callers hand elements in as ``ElementIn`` or plain tuples and get
``RankedElement`` back, both NamedTuples because ranges build hundreds of them per call. Payload
objects are stored by reference and must be treated as immutable.

Validation happens here, before any structure changes (h11's "validate before mutating"): each
helper either returns the value as a plain Python int (or dict) or raises ``InvalidInput``
naming the field, so a refused call changes nothing. ``RankedListCorrupt`` is the other kind of
error: the structures contradict each other, a bug and never bad input.

This module depends only on ``rows`` (for the u64 / u32 bounds) and ``engine.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from engine.errors import InvalidInput
from engine.ranked.rows import _M32, _M64

Payload = dict[str, Any] | None


###################################################################################################
# Values in and out
###################################################################################################


class ElementIn(NamedTuple):
    """One element to write, as taken by ``bulk_upsert`` / ``bulk_load``; plain tuples work too."""

    id: int
    score: int
    tie_breaker: int = 0
    payload: Payload = None


class RankedElement(NamedTuple):
    """An element with its rank, as read. A NamedTuple because ranges build hundreds of them."""

    id: int
    score: int
    tie_breaker: int
    updated_at: int
    payload: Payload
    from_top: int
    from_bottom: int


class RankedChunk(NamedTuple):
    """Consecutive elements in rank order, as numpy arrays (copies), for snapshots."""

    from_top: int
    ids: np.ndarray  # uint64
    scores: np.ndarray  # uint64
    tie_breakers: np.ndarray  # uint32
    updated_at: np.ndarray  # uint32
    payloads: dict[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RankedListStatistics:
    """What ``RankedList.statistics()`` reports; payload memory is not included."""

    elements: int
    blocks: int
    load: int
    smallest_block: int
    largest_block: int
    hash_slots: int
    hash_load: float
    payloads: int
    bytes_estimate: int
    bytes_per_element: float


class RankedListCorrupt(RuntimeError):
    """The internal structures contradict each other: a bug or memory corruption, never bad input.

    Not a PointspaceError on purpose: it becomes a logged 500. ``repair()`` rebuilds the list.
    """


###################################################################################################
# Validation
###################################################################################################


def _int_in(value: object, field: str, hi: int) -> int:
    """Check that ``value`` is an int (not a bool) in ``0..hi`` and return it as a Python int."""
    if type(value) is int and 0 <= value <= hi:
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        v = int(value)
        if 0 <= v <= hi:
            return v
    raise InvalidInput(f"{field} must be an integer in 0..{hi}, got {value!r}", field=field)


def _int_at_least(value: object, field: str, lo: int) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and int(value) >= lo:
        return int(value)
    raise InvalidInput(f"{field} must be an integer >= {lo}, got {value!r}", field=field)


def _payload(value: object) -> Payload:
    if value is None or type(value) is dict:
        return value  # type: ignore[return-value]
    if isinstance(value, dict):
        return value
    raise InvalidInput(
        f"payload must be a JSON object (dict) or None, got {type(value).__name__!r}",
        field="payload",
    )


def _element_in(item: object, index: int) -> tuple[int, int, int, Payload]:
    """Validate one element of a bulk call; the field names the element by its index."""
    if not isinstance(item, tuple | list) or not 2 <= len(item) <= 4:
        raise InvalidInput(
            f"elements[{index}] must be a (id, score, tie_breaker, payload) tuple, got {item!r}",
            field=f"elements[{index}]",
        )
    try:
        element_id = _int_in(item[0], "id", _M64)
        score = _int_in(item[1], "score", _M64)
        tie = _int_in(item[2], "tie_breaker", _M32) if len(item) > 2 else 0
        payload = _payload(item[3]) if len(item) > 3 else None
    except InvalidInput as exc:
        raise InvalidInput(
            f"elements[{index}]: {exc.message}", field=f"elements[{index}].{exc.field}"
        ) from None
    return element_id, score, tie, payload


def _uint_array(values: object, field: str, hi: int) -> np.ndarray:
    """Convert ``values`` to a uint64 array, checking every value is an integer in ``0..hi``."""
    try:
        arr = np.asarray(values)
    except (OverflowError, TypeError, ValueError):
        arr = np.asarray(values, dtype=object)
    if arr.dtype == object:
        try:
            arr = np.array(values, dtype=np.uint64)
        except (OverflowError, TypeError, ValueError):
            raise InvalidInput(
                f"{field} must be integers in 0..{hi}, got values that are not", field=field
            ) from None
    if arr.ndim != 1:
        raise InvalidInput(f"{field} must be one-dimensional, got shape {arr.shape!r}", field=field)
    if not arr.size:
        return np.empty(0, dtype=np.uint64)  # [] is float64 to numpy
    if arr.dtype.kind not in "ui":
        raise InvalidInput(
            f"{field} must be integers in 0..{hi}, got dtype {str(arr.dtype)!r}", field=field
        )
    if arr.size:
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            raise InvalidInput(
                f"{field} must be integers in 0..{hi}, got {int(arr.min())!r}", field=field
            )
        if hi < _M64 and int(arr.max()) > hi:
            raise InvalidInput(
                f"{field} must be integers in 0..{hi}, got {int(arr.max())!r}", field=field
            )
    return arr.astype(np.uint64, copy=False)
