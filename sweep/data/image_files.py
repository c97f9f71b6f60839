"""Image files: read with retries (a network file system's hiccup), decoded as 8-bit RGB. Torch-free:
the analysis reads images for its galleries and explorer with the same rules."""
from __future__ import annotations

import io
import logging
import time

import numpy as np
from PIL import Image, UnidentifiedImageError

from sweep.errors import UserError

log = logging.getLogger(__name__)


class UnreadableImage(Exception):
    """An image file that exists and was read, but cannot be decoded (corrupt, truncated, not an image):
    its example is recorded as unreadable, for good."""


class ImageReadError(UserError):
    """An image file that could not be read, attempt after attempt (missing, no permission, a storage
    error): the run stops with the file named, keeping every row finished; a resume retries it."""


READ_ATTEMPTS, READ_BACKOFF_SECONDS = 4, 0.5  # a failed read waits 0.5, 1, 2 s before the next attempt

# What PIL raises for bytes it cannot decode (its UnidentifiedImageError and truncated files are
# OSErrors; some broken PNG and JPEG streams raise SyntaxError or ValueError, an overlarge image
# DecompressionBombError). Raised while decoding bytes already in memory, none of them is a read error.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_image(path: str, attempts: int = READ_ATTEMPTS) -> Image.Image:
    """Decode an image file as 8-bit RGB: grayscale, palette, CMYK, RGBA and 16-bit inputs are converted.

    The file is read first, in up to `attempts` tries with a growing pause (a network file system's
    hiccup), and raises ImageReadError if it stays unreadable; bytes that cannot be decoded raise
    UnreadableImage.
    """
    data = read_bytes(path, attempts)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: scale to 8 bits, not clip
                pixels = np.asarray(image, dtype=np.float64)
                image = Image.fromarray(np.clip(pixels / 257.0, 0, 255).astype(np.uint8))
            return image.convert("RGB")
    except DECODE_ERRORS as error:
        what = "not an image format PIL can decode" if isinstance(error, UnidentifiedImageError) else error
        raise UnreadableImage(f"{type(error).__name__}: {what}") from error


def read_bytes(path: str, attempts: int = READ_ATTEMPTS) -> bytes:
    """The file's bytes, in up to `attempts` tries with a doubling pause between them; ImageReadError after."""
    for attempt in range(attempts):
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as error:
            if attempt == attempts - 1:
                raise ImageReadError(f"{path}: cannot be read ({type(error).__name__}: {error.strerror or error}) "
                                     f"after {attempts} attempt{'s' * (attempts > 1)}; the rows finished so far are "
                                     f"kept, and rerunning the same command resumes the run") from None
            log.warning("%s: read failed (%s), attempt %d of %d", path, error, attempt + 1, attempts)
            time.sleep(READ_BACKOFF_SECONDS * 2 ** attempt)
    raise AssertionError("unreachable")
