# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Log records of row commands in C: the same bytes as ``msgpack.packb``, written directly.

Theory of operation
-------------------
Every write is logged before it is applied (engine/engine.py), and a counter batch's record is
``msgpack.packb([op, rows], use_bin_type=True)``: a list of a thousand tuples of ints, strings
and ``None``. msgpack's packer is general (it tries each type in turn and goes through a
buffer object per call) and took ~36 ns per value, 0.29 us per event: 7% of an in-process
sparse write (py-spy, issue 17). The rows' shape is known, so :func:`pack_rows` writes the
msgpack encoding of exactly those types straight into one buffer, and returns the very bytes
``msgpack.packb`` would (tests/engine/test_record_encoding.py holds it to that on generated
rows), so logs on disk and their readers do not change.

Anything else (a float, a bool, a nested list, an int past msgpack's range, a string that
is not valid UTF-8) is handed to ``msgpack.packb`` as a whole, which encodes it or raises as
it always did. The fast path never guesses: it encodes a value only if it is an exact ``int``,
an exact ``str`` or ``None``, and rows only if they are exact tuples or lists.

The encodings (msgpack's spec, as msgpack-python picks them): ints take the smallest form,
unsigned forms for positive values and signed ones for negative; strings are fixstr / str8 /
str16 / str32 by length; arrays fixarray / array16 / array32.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import msgpack

ctypedef long long i64
ctypedef unsigned long long u64

#: msgpack's largest string or array (msgpack-python's ``ITEM_LIMIT``): longer ones raise there.
cdef Py_ssize_t ITEM_LIMIT = 0xFFFFFFFF

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyTuple_CheckExact(object)
    bint PyList_CheckExact(object)


cdef struct Buffer:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int reserve(Buffer* buf, Py_ssize_t more) except -1:
    cdef Py_ssize_t need = buf.size + more
    cdef Py_ssize_t capacity
    cdef unsigned char* grown
    if need <= buf.capacity:
        return 0
    capacity = buf.capacity * 2
    if capacity < need:
        capacity = need
    grown = <unsigned char*>realloc(buf.data, capacity)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.capacity = capacity
    return 0


cdef inline void put_be(Buffer* buf, unsigned char kind, u64 value, int width) noexcept:
    """``kind`` then ``value`` big-endian in ``width`` bytes (room already reserved)."""
    cdef unsigned char* p = buf.data + buf.size
    cdef int i
    p[0] = kind
    for i in range(width):
        p[width - i] = <unsigned char>(value >> (8 * i))
    buf.size += 1 + width


cdef int put_array_header(Buffer* buf, Py_ssize_t n) except -1:
    reserve(buf, 5)
    if n < 16:
        buf.data[buf.size] = 0x90 | <unsigned char>n
        buf.size += 1
    elif n < 0x10000:
        put_be(buf, 0xdc, n, 2)
    else:
        put_be(buf, 0xdd, n, 4)
    return 0


cdef int put_signed(Buffer* buf, i64 d) except -1:
    """msgpack-python's ``msgpack_pack_long_long`` (zero and negative values)."""
    reserve(buf, 9)
    if d >= -32:
        buf.data[buf.size] = <unsigned char>(<i64>d & 0xff)  # fixint, positive or negative
        buf.size += 1
    elif d >= -128:
        put_be(buf, 0xd0, <u64>d, 1)
    elif d >= -32768:
        put_be(buf, 0xd1, <u64>d, 2)
    elif d >= -2147483648:
        put_be(buf, 0xd2, <u64>d, 4)
    else:
        put_be(buf, 0xd3, <u64>d, 8)
    return 0


cdef int put_unsigned(Buffer* buf, u64 d) except -1:
    """msgpack-python's ``msgpack_pack_unsigned_long_long`` (positive values)."""
    reserve(buf, 9)
    if d < 128:
        buf.data[buf.size] = <unsigned char>d
        buf.size += 1
    elif d < 0x100:
        put_be(buf, 0xcc, d, 1)
    elif d < 0x10000:
        put_be(buf, 0xcd, d, 2)
    elif (d >> 32) == 0:
        put_be(buf, 0xce, d, 4)
    else:
        put_be(buf, 0xcf, d, 8)
    return 0


cdef bint put_value(Buffer* buf, object value) except -1:
    """Encode one value of a row; False (nothing written) for a value the fast path leaves to
    msgpack."""
    cdef int overflow = 0
    cdef i64 d
    cdef u64 u
    cdef Py_ssize_t n
    cdef const char* text
    if value is None:
        reserve(buf, 1)
        buf.data[buf.size] = 0xc0
        buf.size += 1
        return True
    if PyLong_CheckExact(value):
        d = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0:
            if d > 0:
                put_unsigned(buf, <u64>d)
            else:
                put_signed(buf, d)
            return True
        if overflow < 0:
            return False
        try:
            u = PyLong_AsUnsignedLongLong(value)
        except OverflowError:
            return False
        put_unsigned(buf, u)
        return True
    if PyUnicode_CheckExact(value):
        try:
            text = PyUnicode_AsUTF8AndSize(value, &n)
        except UnicodeError:
            return False
        if n > ITEM_LIMIT:
            return False  # msgpack refuses it: ValueError("unicode string is too large")
        reserve(buf, n + 5)
        if n < 32:
            buf.data[buf.size] = 0xa0 | <unsigned char>n
            buf.size += 1
        elif n < 0x100:
            put_be(buf, 0xd9, n, 1)
        elif n < 0x10000:
            put_be(buf, 0xda, n, 2)
        else:
            put_be(buf, 0xdb, n, 4)
        memcpy(buf.data + buf.size, text, n)
        buf.size += n
        return True
    return False


def pack_rows(object op, object rows_o) -> bytes:
    """``msgpack.packb([op, rows], use_bin_type=True)``, the same bytes, for a list of rows
    (tuples or lists) of ints, strings and ``None``; anything else goes to msgpack whole.

    >>> import msgpack
    >>> rows = [(1, "steps", 0, None, 1704067200, -5, 1704067200, 0)]
    >>> pack_rows("ingest", rows) == msgpack.packb(["ingest", rows], use_bin_type=True)
    True
    >>> pack_rows("ingest", [(1.5,)]) == msgpack.packb(["ingest", [(1.5,)]], use_bin_type=True)
    True
    """
    cdef Buffer buf
    cdef Py_ssize_t i, j, width
    cdef object row
    cdef list rows
    if not PyList_CheckExact(rows_o) or len(rows_o) > ITEM_LIMIT:
        return msgpack.packb([op, rows_o], use_bin_type=True)
    rows = rows_o
    buf.size = 0
    buf.capacity = 64 + 48 * len(rows)
    buf.data = <unsigned char*>malloc(buf.capacity)
    if buf.data == NULL:
        raise MemoryError()
    try:
        put_array_header(&buf, 2)
        if not put_value(&buf, op):
            return msgpack.packb([op, rows], use_bin_type=True)
        put_array_header(&buf, len(rows))
        for i in range(len(rows)):
            row = rows[i]
            if PyTuple_CheckExact(row) or PyList_CheckExact(row):
                width = len(row)
                if width > ITEM_LIMIT:
                    return msgpack.packb([op, rows], use_bin_type=True)
                put_array_header(&buf, width)
                for j in range(width):
                    if not put_value(&buf, row[j]):
                        return msgpack.packb([op, rows], use_bin_type=True)
            else:
                return msgpack.packb([op, rows], use_bin_type=True)
        return PyBytes_FromStringAndSize(<char*>buf.data, buf.size)
    finally:
        free(buf.data)
