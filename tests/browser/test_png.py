"""The screenshot decoder (tests/browser/png.py) against PNGs written with every row filter.

The dashboard test trusts this decoder to tell a drawn chart from a blank one, so it is
checked against an independent encoder: random pixels, each row filtered with a chosen PNG
filter (forward filters written straight from the PNG specification, section 9.2).
"""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from .png import SIGNATURE, decode_png, encode_png


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filtered_png(width: int, height: int, pixels: bytes, bpp: int, filters: list[int]) -> bytes:
    """A PNG whose row ``y`` is written with filter ``filters[y]``."""
    stride = width * bpp
    out = bytearray()
    prev = bytes(stride)
    for y in range(height):
        row = pixels[y * stride : (y + 1) * stride]
        kind = filters[y]
        out.append(kind)
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            predictor = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append((x - predictor) & 0xFF)
        prev = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour = {3: 2, 4: 6}[bpp]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    idat = zlib.compress(bytes(out))
    # Two IDAT chunks, as encoders write for large images.
    return (SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", idat[:10])
            + chunk(b"IDAT", idat[10:]) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bpp", [3, 4])
def test_decode_png_every_filter(bpp):
    rng = random.Random(0)
    width, height = 17, 15
    pixels = bytes(rng.randrange(256) for _ in range(width * height * bpp))
    filters = [y % 5 for y in range(height)]
    image = decode_png(filtered_png(width, height, pixels, bpp, filters))
    assert (image.width, image.height) == (width, height)
    assert image.pixels.tobytes() == pixels


def test_decode_png_counts_and_crops():
    red, blue = bytes([255, 0, 0]), bytes([0, 0, 250])
    image = decode_png(encode_png(4, 2, red * 3 + blue + blue * 4))
    assert image.count_near((255, 0, 0)) == 3
    assert image.count_near((0, 0, 255), tolerance=5) == 5
    assert image.count_near((0, 0, 255), tolerance=4) == 0
    assert image.crop(2, 0, 10, 10).pixels.shape == (2, 2, 3)
    assert image.distinct_colours() == 2


def test_decode_png_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match=r"^not a PNG: the signature is missing$"):
        decode_png(b"GIF89a")
    sixteen_bit = SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(
        ">IIBBBBB", 1, 1, 16, 2, 0, 0, 0) + b"\0\0\0\0"
    with pytest.raises(ValueError, match=r"^unsupported PNG: depth=16 colour type=2 interlace=0$"):
        decode_png(sixteen_bit)
