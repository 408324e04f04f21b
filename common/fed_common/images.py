"""The one image-acceptance check: what the inbox files and the ClientApp trains on.

Why one: the inbox and the ClientApp used to check images with two different Pillow calls,
so a file could be accepted on one side and skipped on the other. Formats are limited to
what a camera or phone writes (others, such as EPS, would run Ghostscript), and the check is
a full decode, so truncated files are caught, not just bad headers. The pixel count is
checked from the header before anything is decoded: a 284 KB PNG can hold 10000x10000
pixels (hundreds of MB once decoded, every round, on a 1 GB Pi), and Pillow only warns
below 179 MP; here that warning is an error too.
"""

from __future__ import annotations

import io
import re
import warnings
from contextlib import contextmanager
from typing import Iterator

from PIL import Image, UnidentifiedImageError

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG includes phones' MPO files
MAX_PIXELS = 40_000_000  # a 12 MP camera module's frame is 12.3 MP; 40 MP leaves room
_ADDRESS = re.compile(r" (?:at|object at) 0x[0-9a-fA-F]+")


class ImageRejected(ValueError):
    """Why bytes are not a usable image; str() is the reason (no object addresses in it)."""


@contextmanager
def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """A fully decoded Pillow image from `data`, or ImageRejected saying why not."""
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                img.close()
                raise ImageRejected(f"image too large ({width}x{height} = {width * height / 1e6:.1f} MP "
                                    f"> max {max_pixels / 1e6:.1f} MP)")
            img.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not a readable image (unknown format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"image too large ({exc})") from None
    except Exception as exc:  # Pillow raises many types for corrupt data; all mean the same here
        detail = _ADDRESS.sub("", str(exc)).strip() or type(exc).__name__
        raise ImageRejected(f"not a readable image ({detail})") from None
    try:
        yield img
    finally:
        img.close()


def image_problem(data: bytes, min_width: int = 1, min_height: int = 1,
                  max_pixels: int = MAX_PIXELS) -> str | None:
    """None for a usable image, else the reason it is not (for a quarantine note or a skip)."""
    try:
        with open_image(data, max_pixels) as img:
            width, height = img.size
    except ImageRejected as exc:
        return str(exc)
    if width < min_width or height < min_height:
        return f"image too small ({width}x{height} < min {min_width}x{min_height})"
    return None
