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
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_rgb(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, shrink_to: tuple[int, int] | None = None
) -> NDArray[np.float32]:
    """HxWx3 float32 in [0, 1]; raises UnreadableImage with a reason a line engineer can act on.

    The file is opened without following links and only a regular file is read. With
    ``shrink_to`` (width, height: the model's input size), an image larger than that in both
    directions comes out at that size, as the model's own resize would make it: a JPEG is decoded
    at the smallest scale still larger (Pillow's draft mode, up to 8x less work) and the
    (antialiased) resize runs on 8-bit pixels before any float copy of the full frame exists.
    Smaller images are left for the model to resize.
    """
    # Pillow refuses images above 2x its own limit before we see their size: lift it to ours when
    # ours is higher. Never lower it: it is process-wide, and anomalib's own reader (the bench's
    # seed loop) would then refuse ordinary images. Our limit is checked below, before decoding.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
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
                size = shrink_to if shrink_to and width > shrink_to[0] and height > shrink_to[1] else None
                if size is not None:
                    img.draft("RGB", size)  # JPEG only; a no-op for other formats
                img.load()
                return _resized(img, size) if size is not None else _to_rgb_float(img)
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


def _resized(img: Image.Image, size: tuple[int, int]) -> NDArray[np.float32]:
    if img.mode in HIGH_BIT_MODES:  # 16-bit and float captures: resize each channel as float
        full = _to_rgb_float(img)
        channels = [
            np.asarray(Image.fromarray(full[..., c], mode="F").resize(size, Image.Resampling.BILINEAR))
            for c in range(3)
        ]
        return np.stack(channels, axis=-1).astype(np.float32)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / np.float32(255.0)


def _to_rgb_float(img: Image.Image) -> NDArray[np.float32]:
    if img.mode in HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else arr.max()
        if img.mode == "F":
            top = max(float(arr.max(initial=0)), 1.0)
        gray = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)
