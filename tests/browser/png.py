"""A small PNG decoder for checking screenshots, so the tests need no imaging library.

Chromium's screenshots are 8-bit RGB or RGBA, not interlaced; that is all this reads. Rows are
unfiltered with numpy where the filter allows it (None, Sub, Up) and byte by byte otherwise
(Average, Paeth), which decodes a 1280x800 screenshot in well under a second.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: PNG colour type -> channels, for the 8-bit types a browser writes.
CHANNELS = {2: 3, 6: 4}


@dataclass(frozen=True)
class Image:
    """Decoded pixels: ``pixels[y, x]`` is ``(r, g, b)`` or ``(r, g, b, a)``."""

    width: int
    height: int
    pixels: np.ndarray

    def crop(self, left: int, top: int, width: int, height: int) -> Image:
        """The part of the image inside a rectangle (clipped to the image)."""
        right, bottom = min(self.width, left + width), min(self.height, top + height)
        left, top = max(0, left), max(0, top)
        part = self.pixels[top:bottom, left:right]
        return Image(part.shape[1], part.shape[0], part)

    def count_near(self, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
        """How many pixels are within ``tolerance`` of ``rgb`` in every channel."""
        diff = np.abs(self.pixels[:, :, :3].astype(np.int16) - np.array(rgb, dtype=np.int16))
        return int(np.count_nonzero((diff <= tolerance).all(axis=2)))

    def distinct_colours(self) -> int:
        flat = self.pixels[:, :, :3].reshape(-1, 3)
        return len(np.unique(flat, axis=0))


def decode_png(data: bytes) -> Image:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG.

    >>> image = decode_png(encode_png(2, 1, bytes([255, 0, 0, 0, 0, 255])))
    >>> image.pixels.tolist()
    [[[255, 0, 0], [0, 0, 255]]]

    Raises:
        ValueError: not a PNG, or a kind of PNG this decoder does not read.
    """
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG: the signature is missing")
    pos, idat, header = len(SIGNATURE), bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("not a PNG: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise ValueError(f"unsupported PNG: depth={depth} colour type={colour} interlace={interlace}")
    bpp = CHANNELS[colour]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data is {len(raw)} bytes, expected {height * (stride + 1)}")
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        row = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1)
        if kind == 0:
            cur = row.copy()
        elif kind == 1:  # Sub: a running sum along each channel, wrapping at 256
            cur = np.cumsum(row.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:  # Up
            cur = row + prev
        elif kind in (3, 4):
            cur = _unfilter_slow(kind, row.tobytes(), prev.tobytes(), bpp)
        else:
            raise ValueError(f"bad PNG filter type {kind} on row {y}")
        out[y] = cur
        prev = out[y]
    return Image(width, height, out.reshape(height, width, bpp))


def _unfilter_slow(kind: int, row: bytes, prev: bytes, bpp: int) -> np.ndarray:
    """Average (3) and Paeth (4): each byte depends on the one just decoded to its left."""
    cur = bytearray(row)
    for i in range(len(cur)):
        left = cur[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 3:
            cur[i] = (cur[i] + ((left + up) >> 1)) & 0xFF
        else:
            corner = prev[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """A minimal RGB PNG (filter None on every row), for testing :func:`decode_png`."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    stride = width * 3
    rows = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
