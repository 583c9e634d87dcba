"""Turn any image file into the pixels the model sees.

This module is the single definition of preprocessing: the training stage
imports these functions to build its arrays, and the app calls them on every
file or camera frame, so the two can never drift apart. Normalisation to the
network's range lives inside the model, so the output here is raw uint8 RGB.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, BinaryIO]

#: Square fitting methods. "pad" keeps the cell's shape by centring it on a
#: black square (the background of the segmented cells); "stretch" resizes
#: each side independently, as the public malaria notebooks do.
FIT_METHODS = ("pad", "stretch")

#: How `fit_square` resizes, as a model's sidecar records it: a model trained on other pixels (releases 1 and 2
#: used Pillow's bilinear resize) would see slightly different cells here, so the app refuses it (edge_app.model).
RESIZE_METHOD = "opencv-area-shrink-linear-enlarge"

#: A cell image is a few hundred pixels a side and a microscope field a few
#: megapixels; anything above this is a mistake or a decompression bomb.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: Images above this many pixels are decoded one at a time, whatever the number of decoding threads: a few
#: such frames at once would need hundreds of megabytes, and a Pi 4 may have 2 GB for everything.
LARGE_PIXELS = 4_000_000
_LARGE_DECODES = threading.BoundedSemaphore(1)


class ImageError(ValueError):
    """An input that cannot be turned into model pixels; the message is one line for the results file."""


def load_rgb(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    reduce_to: int | None = None,
    max_decoded_pixels: int | None = None,
) -> np.ndarray:
    """Decode an image fully, upright and as (H, W, 3) 8-bit RGB pixels, or raise ImageError with a one-line reason.

    Size limits are checked on the header before any pixel is decoded, so a
    bomb costs nothing; Pillow's own DecompressionBombError stays as a second
    line of defence. With `reduce_to`, an image much larger than that (a
    side) is shrunk by a whole factor while it is decoded (JPEG's draft
    mode, else Pillow's box reduce), keeping its shorter side at least twice
    `reduce_to`: a 40-megapixel photo dropped among cell images then costs
    tens of megabytes, not a gigabyte, and the final area resize sees the
    same average it would have. With `max_decoded_pixels`, an image that
    would still be larger than that once decoded (any format but JPEG,
    which draft mode shrinks first) is refused: a memory budget for the
    pixels themselves, not only for the header's claim.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError("file not found (moved or deleted?)") from None
        except PermissionError:
            raise ImageError("permission denied") from None
        if size == 0:
            raise ImageError("empty file (0 bytes)")
        if size > max_bytes:
            raise ImageError(f"file too large ({size} bytes > {max_bytes})")
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"image too large ({width}x{height} > {max_pixels} pixels)")
            factor = min(width, height) // (2 * reduce_to) if reduce_to else 1
            if factor >= 2 and img.format == "JPEG":
                img.draft("RGB", (width // factor, height // factor))
                factor = min(img.size) // (2 * reduce_to)
            if max_decoded_pixels and img.size[0] * img.size[1] > max_decoded_pixels:
                raise ImageError(f"image too large to decode here ({width}x{height}; at most {max_decoded_pixels:,} "
                                 "pixels, or a JPEG)")
            if factor < 2 and _plain_rgb_png(img) and (pixels := _decode_png(source, width, height)) is not None:
                return pixels
            with _LARGE_DECODES if width * height > LARGE_PIXELS else nullcontext():
                img.load()
                small = _reducible(img).reduce(factor) if factor >= 2 else img
                ImageOps.exif_transpose(small, in_place=True)  # upright; no copy of a frame already upright
                return np.asarray(_to_rgb(small))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image or unsupported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large ({exc})") from None
    except FileNotFoundError:
        raise ImageError("file not found (moved or deleted?)") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"corrupt image: {reason}") from None
    except Exception as exc:
        # Fuzzed files make Pillow's plugins raise anything (a TypeError from a TIFF tag): still the file's fault.
        # An exception raised in our own code is not, and propagates.
        if not _raised_in_decoder(exc):
            raise
        reason = " ".join(str(exc).split())
        raise ImageError(f"corrupt image: {type(exc).__name__}{': ' + reason if reason else ''}") from None


_DECODER_PACKAGES = (f"{os.sep}PIL{os.sep}", f"{os.sep}cv2{os.sep}")


def _raised_in_decoder(exc: BaseException) -> bool:
    """Whether the innermost frame of the exception's traceback is inside Pillow or OpenCV."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and any(p in tb.tb_frame.f_code.co_filename for p in _DECODER_PACKAGES)


def _plain_rgb_png(img: Image.Image) -> bool:
    """An 8-bit RGB PNG with no EXIF: its pixels are what any decoder gives, so the faster one may decode it.

    The PNG standard puts eXIf before the image data, so its absence at this
    point (only the header is read) means no orientation to apply.
    """
    if img.format != "PNG" or img.mode != "RGB" or "exif" in img.info or len(img.tile) != 1:
        return False
    args = img.tile[0][3]
    return (args if isinstance(args, str) else args[0]) == "RGB"  # 16-bit files decode as "RGB;16B"


def _decode_png(path: str | os.PathLike | BinaryIO, width: int, height: int) -> np.ndarray | None:
    """Decode a plain PNG file with OpenCV, or None to let Pillow decode it (and name what is wrong).

    PNG is lossless, so the pixels are identical to Pillow's; OpenCV inflates
    faster and, unlike Pillow, releases the GIL for the whole decode, so
    decoding threads run in parallel (benchmarks/decode_throughput.py
    measures it). Pillow still reads the header first, so the size limits
    hold before any pixel is decoded.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    import cv2

    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11; older ones decode to BGR only
    pixels = cv2.imread(os.fspath(path), (cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag) | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.shape[:2] != (height, width):
        return None
    return pixels if rgb_flag is not None else np.ascontiguousarray(pixels[..., ::-1])


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, compositing transparency onto black like the dataset's background."""
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_MODES:
        return _gray8(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"unsupported image mode {img.mode}: {exc}") from None


_ROWS_AT_ONCE = 256
#: Pillow modes wider than 8 bits a channel: 16-bit camera frames and scientific TIFFs.
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def _gray8(img: Image.Image) -> Image.Image:
    """A wide greyscale image as 8-bit "L", scaled to its range (0-1, 0-255 or 0-65535) rather than clipped at 255.

    Converted by strips of rows in float32: never a copy of the whole image
    wider than the 8-bit result (a float64 copy of a 40-megapixel frame was
    320 MB).
    """
    peak = float(img.getextrema()[1])
    top = 1.0 if img.mode == "F" and peak <= 1.0 else (255.0 if peak <= 255 else 65535.0)
    width, height = img.size
    gray = np.empty((height, width), np.uint8)
    for start in range(0, height, _ROWS_AT_ONCE):
        rows = np.asarray(img.crop((0, start, width, min(height, start + _ROWS_AT_ONCE)))).astype(np.float32)
        gray[start:start + _ROWS_AT_ONCE] = np.clip(rows / top * 255.0 + 0.5, 0, 255)
    return Image.fromarray(gray)


def _reducible(img: Image.Image) -> Image.Image:
    """The image in a mode Pillow's reduce() handles: wide modes as 8-bit grey, palettes expanded."""
    if img.mode in WIDE_MODES:
        return _gray8(img)
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    return img


def fit_square(pixels: np.ndarray | Image.Image, size: int, fit: str = "pad") -> np.ndarray:
    """Resize RGB pixels to a (size, size, 3) uint8 array by the given fit method.

    OpenCV resizes: area averaging when shrinking (antialiased at any ratio),
    bilinear when enlarging. It works on the decoded array directly, with no
    round trip through a Pillow image.
    """
    if fit not in FIT_METHODS:
        raise ValueError(f"unknown fit {fit!r}; expected one of {FIT_METHODS}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    arr = np.asarray(pixels, dtype=np.uint8)
    h, w = arr.shape[:2]
    if fit == "stretch":
        return _resize(arr, size, size)
    nw, nh = (size, max(1, round(h * size / w))) if w >= h else (max(1, round(w * size / h)), size)
    out = np.zeros((size, size, 3), np.uint8)  # black, like the segmented cells' background
    y, x = round((size - nh) * 0.5), round((size - nw) * 0.5)
    out[y:y + nh, x:x + nw] = _resize(arr, nw, nh)
    return out


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    shrink = width < arr.shape[1] or height < arr.shape[0]
    return cv2.resize(np.ascontiguousarray(arr), (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess(source: ImageSource | Image.Image, size: int, fit: str = "pad") -> np.ndarray:
    """Decode a file (or take a decoded PIL image) and return the model's uint8 input pixels.

    This is the function both training and the app call.
    """
    if isinstance(source, Image.Image):
        pixels = np.asarray(_to_rgb(ImageOps.exif_transpose(source)))
    else:
        pixels = load_rgb(source, reduce_to=size)
    return fit_square(pixels, size, fit)
