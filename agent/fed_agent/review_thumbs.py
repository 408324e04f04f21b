"""Small JPEGs of stored images for the review page, made on the Pi with Pillow.

Why server-side: a 1280x960 camera frame is ~300 KB; a queue of 60 of them over an SSH
tunnel from a Pi would be slow, and a browser scaling them down is no cheaper for the Pi.
Each image is decoded once per size (JPEG draft mode: the decoder scales by 1/2..1/8 while
reading), bounded to a box of `size` pixels, and kept in a small in-memory cache; the
answer is keyed by content (SHA-256), so the browser may keep it for good.

The file comes from ReviewQueue.stored_file (inside data/, a regular file); an image Pillow
cannot read, or one with more pixels than the inbox accepts, is an error, never a crash.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image, ImageOps

SIZES = {"thumb": 160, "image": 640}  # the two the page asks for: the queue strip and the current image
MAX_PIXELS = 40_000_000  # the inbox's own upper bound (inbox.max_pixels)


class NotAnImage(ValueError):
    """Pillow could not make a thumbnail of the file; the message says why."""


def thumbnail(path: Path, box: int) -> bytes:
    """A JPEG of the image at `path`, at most `box` pixels wide and high."""
    st = path.stat()
    return _render(str(path), st.st_mtime_ns, st.st_size, box)


@functools.lru_cache(maxsize=256)
def _render(path: str, _mtime_ns: int, _size: int, box: int) -> bytes:
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise NotAnImage(f"{img.width}x{img.height} is more than {MAX_PIXELS} pixels")
            img.draft("RGB", (box, box))
            small = ImageOps.exif_transpose(img).convert("RGB")
        small.thumbnail((box, box))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=82)
        return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        if isinstance(exc, NotAnImage):
            raise
        raise NotAnImage(f"not a readable image ({type(exc).__name__})") from None
