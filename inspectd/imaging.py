"""Decode one image file into the float RGB array the exported model expects, or say why not.

Decoding happens here rather than inside anomalib so that truncated files, decompression bombs and
16-bit or CMYK captures get a precise reason instead of a generic crash, and so that dark 8-bit
images are never mistaken for already-normalised input (anomalib divides by 255 only when max > 1).
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from inspectd.errors import UnreadableImage
from inspectd.reading import open_regular

# Peak memory while decoding is about 16 bytes per pixel (8-bit source + float32 RGB copy), so
# 50 MP (a large industrial camera) costs ~0.8 GB. Configurable as ``limits.max_pixels``.
DEFAULT_MAX_PIXELS = 50_000_000


def decode_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.float32]:
    """HxWx3 float32 in [0, 1]; raises UnreadableImage with a reason a line engineer can act on.

    The file is opened without following links and only a regular file is read.
    """
    # Pillow refuses images above 2x its own limit before we see their size; lift it to ours.
    Image.MAX_IMAGE_PIXELS = max(max_pixels, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as fh, Image.open(fh) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise UnreadableImage(f"image has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise UnreadableImage(
                        f"image is {width}x{height} = {width * height} pixels, above the limit of "
                        f"{max_pixels} (limits.max_pixels, the decompression-bomb guard)"
                    )
                img.load()
                return _to_rgb_float(img)
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"decompression bomb refused (limits.max_pixels): {exc}") from None
    except MemoryError:
        raise UnreadableImage("not enough memory to decode this image; lower limits.max_pixels") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system spoke (ELOOP, EINVAL, EIO ...), not the decoder
            raise
        raise UnreadableImage(f"cannot decode image: {exc}") from None
    except (SyntaxError, ValueError, TypeError, EOFError, struct.error) as exc:
        raise UnreadableImage(f"cannot decode image: {exc}") from None


def _to_rgb_float(img: Image.Image) -> NDArray[np.float32]:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else arr.max()
        if img.mode == "F":
            top = max(float(arr.max(initial=0)), 1.0)
        gray = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)
