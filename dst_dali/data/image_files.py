"""An image file as the loader's feed reads it, so that a bad one never stops the stream nor
puts one image's pixels under another's id: its bytes or why they cannot be had (missing,
unreadable, empty, over the decoded-pixel limit by its entry or by its own header), and a
stand-in that decodes, for a batch that is then made again without it.
"""
import io
import struct
import warnings
import zlib
from typing import Optional, Tuple

import numpy as np
from PIL import Image

# PIL's error threshold (2 x Image.MAX_IMAGE_PIXELS): what detectron2 decodes, through PIL, still
# decodes here; a larger image costs gigabytes and seconds at every read.
MAX_PIXELS = 2 * 89_478_485
# Start-of-frame markers, whose segment holds the size: C0-CF but DHT (C4), JPG (C8), DAC (CC).
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG = b"\x89PNG\r\n\x1a\n"


def header_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    """(height, width) that an image file's header gives, as stored (EXIF orientation may swap
    them, which leaves their product alone); None for a header that does not parse (the decoder
    then judges the file). JPEG and PNG, nearly every detection set's, are read here in a few
    microseconds; the other formats DALI decodes (BMP, TIFF, WebP, JPEG 2000, PNM) by Pillow,
    which raises Image.DecompressionBombError beyond its own limit."""
    if data[:8].tobytes() == _PNG and data[12:16].tobytes() == b"IHDR":
        width, height = struct.unpack(">II", data[16:24].tobytes())
        return height, width
    if data[:2].tobytes() != b"\xff\xd8":
        return _pillow_size(data)
    return _jpeg_size(data)


def _jpeg_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a segment
            i += 2
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9].tobytes())
            return height, width
        if marker == 0xDA:  # the scan began before any frame header
            return None
        i += 2 + (int(data[i + 2]) << 8 | int(data[i + 3]))
    return None


def _pillow_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    try:
        with warnings.catch_warnings():  # over Image.MAX_IMAGE_PIXELS: max_pixels decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header, decodes nothing
                width, height = image.size
    except Image.DecompressionBombError:
        raise
    except Exception:  # not an image Pillow knows: DALI's decoder judges it
        return None
    return height, width


def read_image_file(path: str, entry_size, max_pixels: Optional[int]):
    """(bytes as uint8, None) for a file the decoder may read, or (None, why not): it cannot be
    read, is empty, or its entry's or header's size exceeds max_pixels (None: no limit)."""
    if max_pixels is not None and int(entry_size[0]) * int(entry_size[1]) > max_pixels:
        return None, (f"is {entry_size[1]}x{entry_size[0]} in its entry, over "
                      f"max_pixels={max_pixels}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if data.size == 0:
        return None, "is empty"
    if max_pixels is None:
        return data, None
    try:
        size = header_size(data)
    except Image.DecompressionBombError as e:
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels <= 2 * Image.MAX_IMAGE_PIXELS:
            return None, f"is over max_pixels={max_pixels} by its file's header ({e})"
        size = None  # a limit above Pillow's: the size is unknown, the decoder judges
    if size is not None and size[0] * size[1] > max_pixels:
        return None, (f"is {size[1]}x{size[0]} by its file's header, over "
                      f"max_pixels={max_pixels}")
    return data, None


def _stand_in() -> np.ndarray:
    """A 1x1 grey PNG: what the feed gives DALI in place of a bad image, with no boxes."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload +
                struct.pack(">I", zlib.crc32(kind + payload)))
    png = (_PNG + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))
    return np.frombuffer(png, np.uint8)


STAND_IN = _stand_in()
# The stand-in's annotations, per feed input: nothing.
NO_ANNOTATIONS = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int32),
                  "polygons": np.zeros((0, 3), np.int32),
                  "vertices": np.zeros((0, 2), np.float32)}
