"""An image file as the loader's feed reads it, so that a bad one never stops the stream nor
puts one image's pixels under another's id: its bytes or why they cannot be had (missing,
unreadable, not a regular file, empty, larger than any image of its entry's size could be,
over the decoded-pixel limit by its entry or by its own header), and a stand-in that decodes,
for a batch that is then made again without it.
"""
import io
import os
import stat
import struct
import warnings
import zlib
from typing import Optional, Tuple

import numpy as np
from PIL import Image

# PIL's error threshold (2 x Image.MAX_IMAGE_PIXELS): what detectron2 decodes, through PIL, still
# decodes here; a larger image costs gigabytes and seconds at every read.
MAX_PIXELS = 2 * 89_478_485
# The most bytes a file of an image of P pixels is read for: 8 a pixel (16-bit RGBA, the largest
# uncompressed layout any format DALI decodes stores; compressed formats stay below it) plus
# 16 MiB of metadata (EXIF, ICC profiles, thumbnails). A larger file is refused unread.
BYTES_A_PIXEL, METADATA_BYTES = 8, 16 << 20
# what a path that is not a regular file is, by os.stat's mode
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))
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


def status(path: str) -> os.stat_result:
    """What the path finally is: os.stat follows every link of a chain."""
    return os.stat(path)


def file_bytes(path: str, limit: int):
    """(bytes as uint8, None), or (None, why not) for a path that is not a regular file (a
    FIFO would block the reader forever, a device never ends) or holds more than `limit` bytes
    (refused unread: memory stays bounded whatever the file)."""
    try:
        st = status(path)
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        through = (f", through the symlink to {os.path.realpath(path)}"
                   if os.path.islink(path) else "")
        return None, f"is not a regular file ({kind}{through})"
    if st.st_size > limit:
        return None, (f"is {st.st_size} bytes, more than an image of its size can take "
                      f"({limit} bytes at most)")
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(limit + 1), np.uint8)
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if data.size > limit:  # it grew since the stat
        return None, f"holds more than {limit} bytes, more than an image of its size can take"
    return data, None


def byte_limit(pixels: int) -> int:
    return BYTES_A_PIXEL * pixels + METADATA_BYTES


def read_image_file(path: str, entry_size, max_pixels: Optional[int]):
    """(bytes as uint8, None) for a file the decoder may read, or (None, why not): it cannot be
    read, is not a regular file, is empty, is larger than an image of its entry's size can be,
    or its entry's or header's size exceeds max_pixels (None: no limit)."""
    pixels = int(entry_size[0]) * int(entry_size[1])
    if max_pixels is not None and pixels > max_pixels:
        return None, (f"is {entry_size[1]}x{entry_size[0]} in its entry, over "
                      f"max_pixels={max_pixels}")
    data, why = file_bytes(path, byte_limit(pixels))
    if why is not None:
        return None, why
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
